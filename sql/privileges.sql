-- Runs last in CREATE EXTENSION: nothing in backstop is callable by PUBLIC. Operators get access
-- through the backstop_admin role, which superusers grant to whoever runs backups and restores.
--
-- A backstop_admin role that already exists is adopted only if it is a plain group role: one that
-- can log in or carries attributes (superuser, createrole, bypassrls, ...) could have been prepared
-- to gain more than backstop's functions, so CREATE EXTENSION refuses it. Existing members are
-- adopted and listed in a WARNING (a role left behind by DROP EXTENSION keeps its members): every
-- backstop function still checks the caller's own privileges on the tables it touches, so
-- membership gives no access to rows the member could not already read.
DO $$
DECLARE
    existing pg_catalog.pg_roles%ROWTYPE;
    members text;
BEGIN
    SELECT * INTO existing FROM pg_catalog.pg_roles WHERE rolname = 'backstop_admin';
    IF NOT FOUND THEN
        CREATE ROLE backstop_admin NOLOGIN;
    ELSIF existing.rolcanlogin OR existing.rolsuper OR existing.rolcreaterole OR existing.rolcreatedb
          OR existing.rolreplication OR existing.rolbypassrls THEN
        RAISE EXCEPTION 'a role named backstop_admin already exists and is not a plain group role (it can log in or has special attributes)'
            USING HINT = 'Drop or rename that role, or make it NOLOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS, then create the extension again.';
    ELSE
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(r.rolname), ', ' ORDER BY r.rolname) INTO members
          FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.member
         WHERE m.roleid = existing.oid;
        IF members IS NOT NULL THEN
            RAISE WARNING 'adopting the existing role backstop_admin, whose members keep access to backstop: %', members;
        END IF;
    END IF;
END
$$;

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

REVOKE ALL ON SCHEMA @extschema@ FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO backstop_admin;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @extschema@ FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA @extschema@ TO backstop_admin;
REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA @extschema@ TO backstop_admin;
-- Job ids: the caller of a job function takes the next one (backstop.job_runs itself is written only by
-- the job's worker).
REVOKE ALL ON ALL SEQUENCES IN SCHEMA @extschema@ FROM PUBLIC;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA @extschema@ TO backstop_admin;
-- backstop.restores is written only by backstop's own functions (as the table's owner), so the
-- validation gate in front of copy-back plans cannot be forged by an INSERT or UPDATE.

-- The restore log names tables and their row counts: a plain backstop_admin member reads the
-- entries of restored tables she may SELECT (validation and copy-back plans need that anyway).
ALTER TABLE @extschema@.restores ENABLE ROW LEVEL SECURITY;
CREATE POLICY restores_readable ON @extschema@.restores FOR SELECT USING (
    pg_catalog.pg_has_role('backstop_operator', 'MEMBER')
    OR coalesce(pg_catalog.has_table_privilege(target_oid, 'SELECT'), false)
);

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
