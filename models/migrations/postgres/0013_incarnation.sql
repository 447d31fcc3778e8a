-- The database's incarnation: where it stands in its own history, so that a
-- database restored from a backup is told from the one the fleet last saw
-- (package restore, docs/RUNBOOK-RESTORE.md).
--
-- incarnation_id is random, made once here; a backup (pg_dump or physical)
-- carries it, so a restore keeps it, while a different database has its own.
-- (epoch, generation) only grows while the fleet runs: replicas advance the
-- generation periodically (the database clock in microseconds, or +1 if
-- that is not more), and `tokenwarm restore` moves to the next epoch. Each
-- replica remembers the highest (epoch, generation) it saw; a database
-- behind that was restored, and its refresh tokens may have been rotated
-- since. restore_state holds refreshes app-wide: 'required' (a restore was
-- detected; run `tokenwarm restore`) or 'running' (it runs).
CREATE TABLE incarnation (
    id             integer PRIMARY KEY CHECK (id = 1),
    incarnation_id text NOT NULL,
    epoch          bigint NOT NULL DEFAULT 0,
    generation     bigint NOT NULL DEFAULT 0,
    restore_state  text NOT NULL DEFAULT '' CHECK (restore_state IN ('', 'required', 'running')),
    restore_detail text NOT NULL DEFAULT '',
    updated_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO incarnation (id, incarnation_id)
    VALUES (1, md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text || current_database()));
