-- Logical backups with the repository on S3 (Garage): the dump streams into the bucket through
-- multipart upload with nothing written to local disk, is read back from the bucket into
-- pg_restore --list, and restores (CLI and drill) from the bucket.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
SET client_min_messages = error;
\setenv BACKSTOP_PITR_S3 1
\set s3_prefix scenario-logical
\i pg_test/lib/use_garage.sql
CREATE TABLE accounts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL);
-- About 20 MB of rows: more than one multipart part on the way in.
INSERT INTO accounts (owner, balance) SELECT md5(g::text) || repeat('x', 150), g FROM generate_series(1, 100000) g;

SELECT state, tables, rows, bytes > 16 * 1024 * 1024 AS several_parts FROM backstop.logical_backup();
SELECT database, verified, rows, problem FROM backstop.logical_backups();
\! pitr.sh cli logical list | sed -E 's/[0-9]+ bytes/N bytes/'
\! pitr.sh cli logical restore --dbname from_s3 | sed -E 's/[0-9]+ bytes/N bytes/; s/in [0-9.]+ s/in T s/'
SELECT sum(balance) AS balance_sum, max(id) AS max_id FROM accounts \gset
\c from_s3
SELECT count(*) AS accounts, sum(balance) = :balance_sum AS same_sum FROM accounts;
INSERT INTO accounts (owner, balance) VALUES ('new', 0) RETURNING id > :max_id AS new_key;
\c logical_backup_garage
SET client_min_messages = error;
SELECT state, result->>'rows' AS rows, result->>'sequences' AS sequences FROM backstop.run_job('logical_restore');
