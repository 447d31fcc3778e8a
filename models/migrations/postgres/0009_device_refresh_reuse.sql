-- The device refresh reuse interval (package devices): a rotated token
-- keeps its successor, sealed (AES-256-GCM, bound to the session and the
-- successor's generation), until reuse_until, so that a retried refresh
-- whose answer was lost gets the same successor instead of revoking the
-- family. Only the immediate predecessor of an unused successor keeps one;
-- it is erased when the successor is used, the session revoked, or by the
-- housekeeping sweep once reuse_until has passed.
ALTER TABLE device_refresh_tokens ADD COLUMN successor_sealed text NOT NULL DEFAULT '';
ALTER TABLE device_refresh_tokens ADD COLUMN reuse_until timestamptz;
CREATE INDEX device_refresh_tokens_reuse_until ON device_refresh_tokens (reuse_until) WHERE reuse_until IS NOT NULL;
