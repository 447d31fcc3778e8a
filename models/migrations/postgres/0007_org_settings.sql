-- Per-org settings an operator sets through the admin API. The refresh-token
-- idle expiry is set by each customer org's admin for the ISV's connected
-- app ("expire refresh token if not used for N"); tokenwarm must warm every
-- connection of that org well inside it.
CREATE TABLE org_settings (
    org_id                    text PRIMARY KEY,
    refresh_idle_ttl_seconds  bigint NOT NULL CHECK (refresh_idle_ttl_seconds > 0),
    updated_at                timestamptz NOT NULL
);
CREATE INDEX connections_org ON connections (org_id);
