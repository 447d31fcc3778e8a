-- The idle-budget gauge and the warmer's idle-risk sweep look for the
-- active connections refreshed longest ago.
CREATE INDEX connections_idle ON connections (last_refreshed_at) WHERE status = 'active';
