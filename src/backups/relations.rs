//! Every table's relation file, as base backups record it in their manifests (and
//! `table_history` reads it for the current table): where a table is followed through the WAL.

use backstop_core::backups::manifest::RelationFile;

/// The relation file of every permanent table and materialized view of this database (user
/// tables only), or of the one table `oid`: names schema-qualified and quoted as `format('%I.%I')`
/// prints them, whatever the search_path. (OIDs go through bigint: JSON renders an oid as a
/// string.)
pub fn relation_files(oid: Option<u32>) -> Result<Vec<RelationFile>, pgrx::spi::Error> {
    let rows = crate::spi::texts(
        "SELECT pg_catalog.json_build_object(
                    'table', pg_catalog.format('%I.%I', n.nspname, c.relname),
                    'oid', c.oid::bigint,
                    'tablespace', (CASE WHEN c.reltablespace = 0 THEN d.dattablespace ELSE c.reltablespace END)::bigint,
                    'database', d.oid::bigint,
                    'relfilenode', pg_catalog.pg_relation_filenode(c.oid)::bigint)::text
           FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_catalog.pg_database d ON d.datname = pg_catalog.current_database()
          WHERE c.relkind IN ('r', 'm') AND c.relpersistence = 'p' AND c.oid >= 16384
            AND ($1::oid IS NULL OR c.oid = $1::oid)
            AND pg_catalog.pg_relation_filenode(c.oid) IS NOT NULL",
        &[oid.map(i64::from).into()],
    )?;
    Ok(rows.iter().filter_map(|row| serde_json::from_str(row).ok()).collect())
}
