CREATE TABLE connections (
    id                      uuid PRIMARY KEY,
    owner                   text NOT NULL,
    org_id                  text NOT NULL,
    user_id                 text NOT NULL,
    login_url               text NOT NULL,
    instance_url            text NOT NULL DEFAULT '',
    identity_url            text NOT NULL DEFAULT '',
    scopes                  text NOT NULL DEFAULT '',
    status                  text NOT NULL CHECK (status IN ('active', 'needs_reauth', 'revoked')),
    refresh_token_sealed    text NOT NULL DEFAULT '',
    access_token_sealed     text NOT NULL DEFAULT '',
    access_token_issued_at  timestamptz,
    access_token_expires_at timestamptz,
    last_refreshed_at       timestamptz NOT NULL,
    next_warm_at            timestamptz NOT NULL,
    rotation_count          bigint NOT NULL DEFAULT 0,
    consecutive_failures    integer NOT NULL DEFAULT 0,
    next_attempt_at         timestamptz,
    last_error_code         text NOT NULL DEFAULT '',
    last_error_at           timestamptz,
    reauth_reason           text NOT NULL DEFAULT '',
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL,
    UNIQUE (org_id, user_id)
);
CREATE INDEX connections_warm_due ON connections (next_warm_at) WHERE status = 'active';
CREATE INDEX connections_owner ON connections (owner);

CREATE TABLE events (
    id            bigserial PRIMARY KEY,
    connection_id uuid,
    kind          text NOT NULL,
    cause         text NOT NULL DEFAULT '',
    worker        text NOT NULL DEFAULT '',
    http_status   integer NOT NULL DEFAULT 0,
    error_code    text NOT NULL DEFAULT '',
    detail        text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL
);
CREATE INDEX events_connection ON events (connection_id, id);

-- A refresh attempt is written and committed before the refresh token is
-- presented, outside the row-locking transaction, and deleted in the
-- transaction that stores the result. A row that outlives its lease means a
-- worker died (or lost its database) after presenting: the outcome is unknown.
CREATE TABLE refresh_attempts (
    connection_id  uuid PRIMARY KEY REFERENCES connections (id) ON DELETE CASCADE,
    attempt_id     text NOT NULL,
    worker         text NOT NULL,
    rotation_count bigint NOT NULL,
    started_at     timestamptz NOT NULL,
    lease_until    timestamptz NOT NULL
);
