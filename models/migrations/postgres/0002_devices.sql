-- Pending authorizations of the PKCE web-server flow (package pkce). The
-- state itself is never stored, only its SHA-256, so a database reader
-- cannot complete someone's flow.
CREATE TABLE pending_authorizations (
    state_hash        text PRIMARY KEY,
    purpose           text NOT NULL CHECK (purpose IN ('connect', 'reauth')),
    connection_id     uuid,
    verifier_sealed   text NOT NULL,
    login_url         text NOT NULL,
    app_redirect_uri  text NOT NULL DEFAULT '',
    app_challenge     text NOT NULL DEFAULT '',
    app_state         text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    used_at           timestamptz
);
CREATE INDEX pending_authorizations_expiry ON pending_authorizations (expires_at);

-- One-time handoff codes: the app trades one, with its own PKCE verifier,
-- for a device session.
CREATE TABLE handoff_codes (
    code_hash        text PRIMARY KEY,
    connection_id    uuid NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    owner            text NOT NULL,
    app_challenge    text NOT NULL,
    app_redirect_uri text NOT NULL,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    used_at          timestamptz
);

-- A device session is one token family: every rotation of its refresh
-- token stays in device_refresh_tokens, so a reused (already rotated) token
-- is recognised and revokes the whole family.
CREATE TABLE device_sessions (
    id             uuid PRIMARY KEY,
    owner          text NOT NULL,
    device_label   text NOT NULL DEFAULT '',
    generation     bigint NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL,
    last_used_at   timestamptz NOT NULL,
    idle_expires_at timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoke_reason  text NOT NULL DEFAULT ''
);
CREATE INDEX device_sessions_owner ON device_sessions (owner);

CREATE TABLE device_refresh_tokens (
    token_hash  text PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES device_sessions (id) ON DELETE CASCADE,
    generation  bigint NOT NULL,
    created_at  timestamptz NOT NULL,
    rotated_at  timestamptz
);
CREATE INDEX device_refresh_tokens_session ON device_refresh_tokens (session_id);

-- Signing keys of device JWTs. The private key is sealed; the newest key
-- that is not retired signs, every key not retired verifies.
CREATE TABLE signing_keys (
    kid             text PRIMARY KEY,
    alg             text NOT NULL,
    private_sealed  text NOT NULL,
    public_key      text NOT NULL,
    created_at      timestamptz NOT NULL,
    retired_at      timestamptz
);
