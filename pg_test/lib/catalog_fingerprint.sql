-- backstop's catalog as one fingerprint per kind of object (pg_test/scenarios/upgrade_0_1_0.sql):
-- every function (arguments, result, volatility, symbol, privileges), every relation (columns,
-- defaults, constraints, indexes, views, privileges) and the count of the extension's members.
CREATE VIEW catalog_fingerprint AS
SELECT (SELECT md5(string_agg(f, E'\n' ORDER BY f)) FROM (
          SELECT p.oid::regprocedure::text || ' ' || pg_get_function_arguments(p.oid) || ' -> ' || pg_get_function_result(p.oid)
                 || ' ' || p.provolatile::text || p.proparallel::text || p.proisstrict::text || ' ' || p.prosrc || ' ' || coalesce(p.proacl::text, '-') AS f
            FROM pg_proc p WHERE p.pronamespace = 'backstop'::regnamespace) fs) AS functions,
       (SELECT md5(string_agg(r, E'\n' ORDER BY r)) FROM (
          SELECT c.relname || ' ' || c.relkind::text || ' ' || coalesce(c.relacl::text, '-') || ' ' || coalesce(c.reloptions::text, '-') || ' '
                 || coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text
                                                || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), ', ' ORDER BY a.attnum)
                                FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
                 || ' ' || coalesce((SELECT string_agg(pg_get_constraintdef(k.oid), ', ' ORDER BY pg_get_constraintdef(k.oid)) FROM pg_constraint k WHERE k.conrelid = c.oid), '')
                 || ' ' || coalesce((SELECT string_agg(pg_get_indexdef(i.indexrelid), ', ' ORDER BY pg_get_indexdef(i.indexrelid)) FROM pg_index i WHERE i.indrelid = c.oid), '')
                 || ' ' || CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) ELSE '' END
                 || ' ' || c.relrowsecurity::text || ' ' || coalesce((SELECT string_agg(pol.polname || ' ' || pol.polcmd::text || ' ' || pg_get_expr(pol.polqual, pol.polrelid), ', ' ORDER BY pol.polname)
                                                                     FROM pg_policy pol WHERE pol.polrelid = c.oid), '') AS r
            FROM pg_class c WHERE c.relnamespace = 'backstop'::regnamespace) rs) AS relations,
       (SELECT count(*) FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
         WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'backstop' AND d.deptype = 'e') AS members;
