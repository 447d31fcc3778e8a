-- Admin API keys: only a SHA-256 of the key is stored; the prefix lets a
-- human tell keys apart in lists and logs.
CREATE TABLE admin_keys (
    id           text PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    key_hash     text NOT NULL UNIQUE,
    prefix       text NOT NULL,
    created_at   datetime NOT NULL,
    last_used_at datetime,
    revoked_at   datetime
);

-- Webhook outbox: one row per (event, endpoint), written in the same
-- transaction as the event it announces, delivered at least once with
-- retries. event_id is the idempotency ID receivers deduplicate on.
CREATE TABLE webhook_outbox (
    id              integer PRIMARY KEY AUTOINCREMENT,
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    endpoint_url    text NOT NULL,
    payload         text NOT NULL,
    created_at      datetime NOT NULL,
    next_attempt_at datetime NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    delivered_at    datetime,
    last_error      text NOT NULL DEFAULT '',
    UNIQUE (event_id, endpoint_url)
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE delivered_at IS NULL;
