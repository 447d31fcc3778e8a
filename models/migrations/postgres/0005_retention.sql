-- Housekeeping deletes finished rows by age; these indexes keep those
-- deletes from scanning whole tables.
CREATE INDEX events_created ON events (created_at);
CREATE INDEX handoff_codes_expiry ON handoff_codes (expires_at);
CREATE INDEX device_sessions_idle ON device_sessions (idle_expires_at);
CREATE INDEX device_sessions_revoked ON device_sessions (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX device_refresh_tokens_rotated ON device_refresh_tokens (rotated_at) WHERE rotated_at IS NOT NULL;
CREATE INDEX webhook_outbox_delivered ON webhook_outbox (delivered_at) WHERE delivered_at IS NOT NULL;
