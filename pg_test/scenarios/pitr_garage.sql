-- Base backups and point-in-time recovery with the repository on S3 (Garage): the same story as
-- on the embedded default, every backup, WAL segment and restore going through the S3 API.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
\setenv PGDATABASE :DBNAME
\setenv BACKSTOP_PITR_S3 1
\set s3_repository 's3://' :s3_bucket '/scenario-pitr'
ALTER SYSTEM SET backstop.repository = :'s3_repository';
ALTER SYSTEM SET backstop.s3_endpoint = :'s3_endpoint';
ALTER SYSTEM SET backstop.s3_region = 'garage';
ALTER SYSTEM SET backstop.s3_force_path_style = on;
ALTER SYSTEM SET backstop.s3_access_key_id = :'s3_access_key_id';
ALTER SYSTEM SET backstop.s3_secret_access_key = :'s3_secret_access_key';
SELECT pg_reload_conf();
SELECT pg_sleep(1);
-- The segment in progress goes to the new repository.
SELECT next_segment() IS NOT NULL AS archiving_to_s3;
\i pg_test/lib/pitr_story.sql
