-- Table snapshots and guided recovery on the embedded default, a local-directory repository.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
SHOW backstop.repository;
\i pg_test/lib/snapshot_story.sql
