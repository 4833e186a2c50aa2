-- Runs last in CREATE EXTENSION: nothing in backstop is callable by PUBLIC. Operators get access
-- through the backstop_admin role, which superusers grant to whoever runs backups and restores.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'backstop_admin') THEN
        CREATE ROLE backstop_admin NOLOGIN;
    END IF;
END
$$;

REVOKE ALL ON SCHEMA @extschema@ FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO backstop_admin;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @extschema@ FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA @extschema@ TO backstop_admin;
REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA @extschema@ TO backstop_admin;
-- restore_table and restore_validate run as the operator and record what they did.
GRANT INSERT, UPDATE ON @extschema@.restores TO backstop_admin;
