-- Attempt markers now fence every write of a refresh result, and an
-- unresolved one (a presentation whose outcome is unknown) makes the next
-- worker introspect the token before it may present it again.
--
-- protocol is the refresh protocol of the binary that wrote the marker.
-- Binaries older than this migration do not write it, so their marker
-- insert fails and they never present a token: during a rolling upgrade an
-- old replica cannot present blind. A later protocol raises the CHECK.
ALTER TABLE refresh_attempts ADD COLUMN protocol integer NOT NULL DEFAULT 1;
ALTER TABLE refresh_attempts ALTER COLUMN protocol DROP DEFAULT;
ALTER TABLE refresh_attempts ADD CONSTRAINT refresh_attempts_protocol CHECK (protocol >= 2) NOT VALID;
ALTER TABLE refresh_attempts ADD COLUMN state text NOT NULL DEFAULT 'presenting'
    CHECK (state IN ('presenting', 'unresolved'));
ALTER TABLE refresh_attempts ADD COLUMN alerted_at timestamptz;
