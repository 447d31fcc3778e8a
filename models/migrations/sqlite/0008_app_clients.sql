-- See the Postgres migration of the same number.
ALTER TABLE pending_authorizations ADD COLUMN client_id text NOT NULL DEFAULT '';
ALTER TABLE handoff_codes ADD COLUMN client_id text NOT NULL DEFAULT '';
ALTER TABLE device_sessions ADD COLUMN client_id text NOT NULL DEFAULT '';
