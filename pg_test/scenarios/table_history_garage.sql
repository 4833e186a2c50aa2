-- "When did it happen?" with the repository on S3 (Garage): the same story, the archived WAL read
-- through the S3 API.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
\set s3_prefix scenario-history
\i pg_test/lib/use_garage.sql
SELECT next_segment() IS NOT NULL AS archiving_to_s3;
\i pg_test/lib/table_history_story.sql
