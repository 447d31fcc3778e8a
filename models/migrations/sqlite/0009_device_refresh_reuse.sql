-- See the Postgres migration of the same number.
ALTER TABLE device_refresh_tokens ADD COLUMN successor_sealed text NOT NULL DEFAULT '';
ALTER TABLE device_refresh_tokens ADD COLUMN reuse_until datetime;
CREATE INDEX device_refresh_tokens_reuse_until ON device_refresh_tokens (reuse_until) WHERE reuse_until IS NOT NULL;
