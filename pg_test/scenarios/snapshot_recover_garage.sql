-- Table snapshots and guided recovery on Garage, a real S3-compatible store: the million-row
-- snapshot is a multipart upload, every restore a verified streaming download.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
\set s3_repository 's3://' :s3_bucket '/scenario-snapshots'
ALTER SYSTEM SET backstop.repository = :'s3_repository';
ALTER SYSTEM SET backstop.s3_endpoint = :'s3_endpoint';
ALTER SYSTEM SET backstop.s3_region = 'garage';
ALTER SYSTEM SET backstop.s3_force_path_style = on;
ALTER SYSTEM SET backstop.s3_access_key_id = :'s3_access_key_id';
ALTER SYSTEM SET backstop.s3_secret_access_key = :'s3_secret_access_key';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
\i pg_test/lib/snapshot_story.sql
