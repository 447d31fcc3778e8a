-- See the Postgres migration of the same number.
ALTER TABLE connections ADD COLUMN user_name text NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN user_username text NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN user_email text NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN org_name text NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN authorized_at datetime;
UPDATE connections SET authorized_at = created_at;
CREATE INDEX connections_authorized ON connections (authorized_at) WHERE status = 'active';
