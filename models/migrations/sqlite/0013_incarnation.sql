-- See the Postgres migration of the same number.
CREATE TABLE incarnation (
    id             integer PRIMARY KEY CHECK (id = 1),
    incarnation_id text NOT NULL,
    epoch          bigint NOT NULL DEFAULT 0,
    generation     bigint NOT NULL DEFAULT 0,
    restore_state  text NOT NULL DEFAULT '' CHECK (restore_state IN ('', 'required', 'running')),
    restore_detail text NOT NULL DEFAULT '',
    updated_at     datetime NOT NULL DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO incarnation (id, incarnation_id) VALUES (1, lower(hex(randomblob(16))));
