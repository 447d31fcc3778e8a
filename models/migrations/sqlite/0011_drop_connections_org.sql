-- connections_org (org_id) repeats the leading column of the unique index
-- on (org_id, user_id), which serves org_id = ? lookups as well.
DROP INDEX IF EXISTS connections_org;
