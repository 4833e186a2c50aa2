-- backstop 0.2.0 -> 0.3.0: an authenticated repository.
--
-- Every object backstop writes from now on is signed with the cluster's Ed25519 key (kept in
-- $PGDATA/backstop_signing.key, created on first use); nothing unsigned is read. Two functions join
-- the extension: repository_key() prints the public key for the recovery kit, and
-- adopt_repository() vouches once for the unsigned objects 0.2.0 wrote. Nothing existing changes
-- shape: backstop.restores, backstop.job_runs and backstop.schedules keep every row and grant. The
-- new functions (and table_history(), the transactions that changed a table, read from the WAL) get the privileges every backstop function has (sql/privileges.sql): none for
-- PUBLIC, EXECUTE for backstop_admin. Base backups, expire, the PITR drill and logical backups now
-- need superuser or the new role backstop_operator (a member of backstop_admin and of
-- pg_read_all_data).
-- The definitions are those cargo pgrx schema generates for 0.3.0 (src/auth.rs); the upgrade test
-- compares the upgraded catalog with a fresh 0.3.0 install, so a drift here fails it.

CREATE FUNCTION "adopt_repository"() RETURNS TABLE (
	"adopted" bigint,  /* i64 */
	"bytes" bigint,  /* i64 */
	"already_authenticated" bigint,  /* i64 */
	"refused" bigint,  /* i64 */
	"record" TEXT  /* Option < String > */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'adopt_repository_wrapper';

-- table_history(): the transactions that changed a table, read from the WAL (src/recover/sql.rs).
CREATE FUNCTION "table_history"(
	"tbl" TEXT, /* &str */
	"since" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"until" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"max_rows" INT DEFAULT 100 /* i32 */
) RETURNS TABLE (
	"commit_time" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"xid" bigint,  /* i64 */
	"inserted" bigint,  /* i64 */
	"updated" bigint,  /* i64 */
	"deleted" bigint,  /* i64 */
	"file_change" TEXT,  /* Option < String > */
	"commit_lsn" TEXT,  /* String */
	"target_lsn" TEXT,  /* String */
	"target_inclusive" bool  /* bool */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'table_history_wrapper';

-- recover() takes a recovery target too (src/recover/sql.rs): the table as it was at that point,
-- read from a throwaway server. Its earlier arguments and their order are kept.
DROP FUNCTION @extschema@.recover(text, text, text, text, boolean);
CREATE FUNCTION "recover"(
	"table_name" TEXT, /* &str */
	"snapshot_id" TEXT DEFAULT NULL, /* Option < & str > */
	"target_table" TEXT DEFAULT NULL, /* Option < & str > */
	"replace_target" TEXT DEFAULT NULL, /* Option < & str > */
	"trust_unauthenticated" bool DEFAULT false, /* bool */
	"target_time" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"target_lsn" TEXT DEFAULT NULL, /* Option < & str > */
	"target_xid" bigint DEFAULT NULL, /* Option < i64 > */
	"target_name" TEXT DEFAULT NULL, /* Option < & str > */
	"target_inclusive" bool DEFAULT true /* bool */
) RETURNS TABLE (
	"strategy" TEXT,  /* String */
	"description" TEXT,  /* String */
	"sql" TEXT  /* String */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'recover_wrapper';

-- recover(array[...], target => ...): several tables at one recovery target (src/recover/sql.rs).
CREATE FUNCTION "recover"(
	"table_names" TEXT[], /* Vec < String > */
	"target_time" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"target_lsn" TEXT DEFAULT NULL, /* Option < & str > */
	"target_xid" bigint DEFAULT NULL, /* Option < i64 > */
	"target_name" TEXT DEFAULT NULL, /* Option < & str > */
	"target_inclusive" bool DEFAULT true /* bool */
) RETURNS TABLE (
	"table_name" TEXT,  /* String */
	"strategy" TEXT,  /* String */
	"description" TEXT,  /* String */
	"sql" TEXT  /* String */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'recover_tables_wrapper';

CREATE FUNCTION "repository_key"() RETURNS TEXT /* alloc::string::String */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'repository_key_wrapper';

-- backstop_operator, as sql/privileges.sql creates it for a fresh install.
-- backstop_operator: who may run what reads every table or removes what others stored (base
-- backups, expire, the PITR drill, logical backups and their drill). A base backup holds pg_authid
-- and the server's configuration, so the role says so in its grant: it is a member of
-- pg_read_all_data. Membership is granted by a superuser, explicitly. An existing role of that name
-- is adopted only if it is a plain group role, as backstop_admin is.
DO $$
DECLARE
    existing pg_catalog.pg_roles%ROWTYPE;
BEGIN
    SELECT * INTO existing FROM pg_catalog.pg_roles WHERE rolname = 'backstop_operator';
    IF NOT FOUND THEN
        CREATE ROLE backstop_operator NOLOGIN;
    ELSIF existing.rolcanlogin OR existing.rolsuper OR existing.rolcreaterole OR existing.rolcreatedb
          OR existing.rolreplication OR existing.rolbypassrls THEN
        RAISE EXCEPTION 'a role named backstop_operator already exists and is not a plain group role (it can log in or has special attributes)'
            USING HINT = 'Drop or rename that role, or make it NOLOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS, then create the extension again.';
    END IF;
END
$$;
GRANT backstop_admin TO backstop_operator;
GRANT pg_read_all_data TO backstop_operator;

REVOKE ALL ON FUNCTION @extschema@.adopt_repository() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.repository_key() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.adopt_repository() TO backstop_admin;
GRANT EXECUTE ON FUNCTION @extschema@.repository_key() TO backstop_admin;
REVOKE ALL ON FUNCTION @extschema@.table_history(text, timestamptz, timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.recover(text, text, text, text, boolean, timestamptz, text, bigint, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.recover(text, text, text, text, boolean, timestamptz, text, bigint, text, boolean) TO backstop_admin;
GRANT EXECUTE ON FUNCTION @extschema@.table_history(text, timestamptz, timestamptz, integer) TO backstop_admin;
REVOKE ALL ON FUNCTION @extschema@.recover(text[], timestamptz, text, bigint, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.recover(text[], timestamptz, text, bigint, text, boolean) TO backstop_admin;

-- Job history a plain backstop_admin member may read: the runs she asked for, WAL drills, and
-- snapshot runs of tables she may SELECT. Everything else (base backups, drills that count every
-- table, logical backups, expire) names tables and row counts only members of backstop_operator
-- (who read every table anyway) and superusers see. backstop's own code writes the table as its
-- owner, and doctor() reads it as its owner, so neither is affected.
ALTER TABLE @extschema@.job_runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_runs_readable ON @extschema@.job_runs FOR SELECT USING (
    pg_catalog.pg_has_role('backstop_operator', 'MEMBER')
    OR requested_by = CURRENT_USER
    OR kind = 'wal_fetch'
    OR (kind IN ('snapshot', 'snapshot_restore')
        AND NOT args ? 'schema'
        AND (args ? 'tables' OR args ? 'table')
        AND NOT EXISTS (
            SELECT 1 FROM pg_catalog.jsonb_array_elements_text(
                       CASE WHEN args ? 'tables' THEN args->'tables' ELSE pg_catalog.jsonb_build_array(args->'table') END) t(name)
             WHERE NOT coalesce(pg_catalog.has_table_privilege(pg_catalog.to_regclass(t.name), 'SELECT'), false)))
);
-- The restore log names tables and their row counts: a plain backstop_admin member reads the
-- entries of restored tables she may SELECT (validation and copy-back plans need that anyway).
ALTER TABLE @extschema@.restores ENABLE ROW LEVEL SECURITY;
CREATE POLICY restores_readable ON @extschema@.restores FOR SELECT USING (
    pg_catalog.pg_has_role('backstop_operator', 'MEMBER')
    OR coalesce(pg_catalog.has_table_privilege(target_oid, 'SELECT'), false)
);
-- schedule_status reads job_runs with the caller's rights, so the policy above applies to it.
ALTER VIEW @extschema@.schedule_status SET (security_invoker = true);
