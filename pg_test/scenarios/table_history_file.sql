-- "When did it happen?": backstop.table_history() lists the transactions that changed a table,
-- newest first, read from the WAL, each with the recovery target that undoes it.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
\i pg_test/lib/table_history_story.sql
