-- See the Postgres migration of the same number. SQLite cannot add a CHECK
-- to a table, so the table is rebuilt.
CREATE TABLE refresh_attempts_v6 (
    connection_id  text PRIMARY KEY REFERENCES connections (id) ON DELETE CASCADE,
    attempt_id     text NOT NULL,
    worker         text NOT NULL,
    rotation_count bigint NOT NULL,
    started_at     datetime NOT NULL,
    lease_until    datetime NOT NULL,
    protocol       integer NOT NULL CHECK (protocol >= 2),
    state          text NOT NULL DEFAULT 'presenting' CHECK (state IN ('presenting', 'unresolved')),
    alerted_at     datetime
);
INSERT INTO refresh_attempts_v6 (connection_id, attempt_id, worker, rotation_count, started_at, lease_until, protocol, state)
    SELECT connection_id, attempt_id, worker, rotation_count, started_at, lease_until, 2, 'presenting' FROM refresh_attempts;
DROP TABLE refresh_attempts;
ALTER TABLE refresh_attempts_v6 RENAME TO refresh_attempts;
