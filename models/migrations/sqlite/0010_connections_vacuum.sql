-- Postgres vacuums connections sooner from this version on (see the
-- Postgres migration of the same number); SQLite has no autovacuum of dead
-- row versions to tune.
SELECT 1;
