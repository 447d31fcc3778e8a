-- See the Postgres migration of the same number.
CREATE TABLE org_settings (
    org_id                    text PRIMARY KEY,
    refresh_idle_ttl_seconds  bigint NOT NULL CHECK (refresh_idle_ttl_seconds > 0),
    updated_at                datetime NOT NULL
);
CREATE INDEX connections_org ON connections (org_id);
