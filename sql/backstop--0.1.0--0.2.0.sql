-- backstop 0.1.0 -> 0.2.0: logical backups (pg_dump) join the extension.
--
-- Nothing existing changes shape: backstop.restores, backstop.job_runs and backstop.schedules keep
-- every row and grant (job kinds are text; the new ones, logical_backup and logical_restore, need no
-- change to the tables). The two new functions get the same privileges every backstop function
-- has (sql/privileges.sql): none for PUBLIC, EXECUTE for backstop_admin.
-- The definitions are those cargo pgrx schema generates for 0.2.0 (src/logical/mod.rs); the upgrade
-- test compares the upgraded catalog with a fresh 0.2.0 install, so a drift here fails it.

CREATE FUNCTION "logical_backup"(
	"database" TEXT DEFAULT NULL, /* Option < & str > */
	"wait" bool DEFAULT true /* bool */
) RETURNS TABLE (
	"job_id" bigint,  /* i64 */
	"state" TEXT,  /* String */
	"backup_id" TEXT,  /* Option < String > */
	"database" TEXT,  /* Option < String > */
	"bytes" bigint,  /* Option < i64 > */
	"tables" bigint,  /* Option < i64 > */
	"rows" bigint,  /* Option < i64 > */
	"seconds" double precision  /* Option < f64 > */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'logical_backup_wrapper';

CREATE FUNCTION "logical_backups"(
	"database" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"database" TEXT,  /* String */
	"backup_id" TEXT,  /* String */
	"start_time" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"stop_time" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"bytes" bigint,  /* Option < i64 > */
	"tables" bigint,  /* Option < i64 > */
	"rows" bigint,  /* Option < i64 > */
	"list_entries" bigint,  /* Option < i64 > */
	"pg_dump" TEXT,  /* Option < String > */
	"verified" bool,  /* bool */
	"problem" TEXT  /* Option < String > */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'logical_backups_wrapper';

REVOKE ALL ON FUNCTION @extschema@.logical_backup(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.logical_backups(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.logical_backup(text, boolean) TO backstop_admin;
GRANT EXECUTE ON FUNCTION @extschema@.logical_backups(text) TO backstop_admin;
