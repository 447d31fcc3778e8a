-- Who a connection belongs to, for operators (issue 12): the Salesforce
-- user's display name, username and email and the org's name, captured
-- from the identity service and the REST API at connect and
-- re-authorization (TOKENWARM_CAPTURE_IDENTITY). Personal data, kept in
-- plaintext on purpose so that operators can search it (docs/ARCHITECTURE.md,
-- "Personal data"); DELETE /admin/v1/connections/{id}/identity erases the
-- user's fields. Never a token.
ALTER TABLE connections ADD COLUMN user_name text NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN user_username text NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN user_email text NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN org_name text NOT NULL DEFAULT '';
-- When the user last authorized (connect or re-authorization): Salesforce's
-- "expire refresh token after N" counts from it (SALESFORCE_REFRESH_MAX_AGE).
-- Rows from before this migration count from their creation, which is
-- never later than their last authorization: the warning comes early, not late.
ALTER TABLE connections ADD COLUMN authorized_at timestamptz;
UPDATE connections SET authorized_at = created_at;
CREATE INDEX connections_authorized ON connections (authorized_at) WHERE status = 'active';
