-- connections_org (org_id) repeats the leading column of the unique index
-- on (org_id, user_id), which serves every org_id = ? lookup as well. Every
-- update that moves next_warm_at or last_refreshed_at (each claim, each
-- stored refresh) writes an entry into every index of connections: one
-- index fewer is one B-tree insertion fewer per warmed connection.
DROP INDEX IF EXISTS connections_org;
