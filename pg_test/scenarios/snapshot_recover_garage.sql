-- Table snapshots and guided recovery on Garage, a real S3-compatible store: the million-row
-- snapshot is a multipart upload, every restore a verified streaming download.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
\set s3_prefix scenario-snapshots
\i pg_test/lib/use_garage.sql
\i pg_test/lib/snapshot_story.sql
