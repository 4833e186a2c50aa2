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
\set s3_prefix scenario-pitr
\i pg_test/lib/use_garage.sql
-- The segment in progress goes to the new repository.
SELECT next_segment() IS NOT NULL AS archiving_to_s3;
\i pg_test/lib/pitr_story.sql
