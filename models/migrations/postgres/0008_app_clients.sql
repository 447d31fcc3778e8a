-- Standard OAuth for the app's leg (issue 11): the registered app client
-- (TOKENWARM_APP_CLIENTS) an authorization was started by is carried from
-- the pending authorization to the handoff code and on to the device
-- session, so the token, refresh and revocation endpoints can check that
-- the client presenting a code or token is the one it was issued to. Empty
-- for the legacy flow, which names no client.
ALTER TABLE pending_authorizations ADD COLUMN client_id text NOT NULL DEFAULT '';
ALTER TABLE handoff_codes ADD COLUMN client_id text NOT NULL DEFAULT '';
ALTER TABLE device_sessions ADD COLUMN client_id text NOT NULL DEFAULT '';
