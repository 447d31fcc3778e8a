CREATE TABLE connections (
    id                      text PRIMARY KEY,
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
    access_token_issued_at  datetime,
    access_token_expires_at datetime,
    last_refreshed_at       datetime NOT NULL,
    next_warm_at            datetime NOT NULL,
    rotation_count          bigint NOT NULL DEFAULT 0,
    consecutive_failures    integer NOT NULL DEFAULT 0,
    next_attempt_at         datetime,
    last_error_code         text NOT NULL DEFAULT '',
    last_error_at           datetime,
    reauth_reason           text NOT NULL DEFAULT '',
    created_at              datetime NOT NULL,
    updated_at              datetime NOT NULL,
    UNIQUE (org_id, user_id)
);
CREATE INDEX connections_warm_due ON connections (next_warm_at);
CREATE INDEX connections_owner ON connections (owner);

CREATE TABLE events (
    id            integer PRIMARY KEY AUTOINCREMENT,
    connection_id text,
    kind          text NOT NULL,
    cause         text NOT NULL DEFAULT '',
    worker        text NOT NULL DEFAULT '',
    http_status   integer NOT NULL DEFAULT 0,
    error_code    text NOT NULL DEFAULT '',
    detail        text NOT NULL DEFAULT '',
    created_at    datetime NOT NULL
);
CREATE INDEX events_connection ON events (connection_id, id);

-- A refresh attempt is written and committed before the refresh token is
-- presented, outside the row-locking transaction, and deleted in the
-- transaction that stores the result. A row that outlives its lease means a
-- worker died (or lost its database) after presenting: the outcome is unknown.
CREATE TABLE refresh_attempts (
    connection_id  text PRIMARY KEY REFERENCES connections (id) ON DELETE CASCADE,
    attempt_id     text NOT NULL,
    worker         text NOT NULL,
    rotation_count bigint NOT NULL,
    started_at     datetime NOT NULL,
    lease_until    datetime NOT NULL
);
