//! What a table looks like, read from the catalogs into the manifest's terms.

use backstop_core::snapshot::manifest::{
    AccessDef, ColumnDef, ConstraintDef, Encoding, GrantDef, PolicyDef, ReferencingKey, TableDef,
};
use pgrx::prelude::*;

use crate::errors::raise_with;

/// The Parquet encoding of a column type: exact Arrow types for the built-in types whose binary
/// values map onto them one to one (domains count as their base type), text I/O for the rest.
pub fn encoding_for(type_oid: pg_sys::Oid) -> Encoding {
    let base = unsafe { pg_sys::getBaseType(type_oid) };
    match base {
        pg_sys::BOOLOID => Encoding::Bool,
        pg_sys::INT2OID => Encoding::Int16,
        pg_sys::INT4OID => Encoding::Int32,
        pg_sys::INT8OID => Encoding::Int64,
        pg_sys::FLOAT4OID => Encoding::Float32,
        pg_sys::FLOAT8OID => Encoding::Float64,
        pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID => Encoding::Text,
        pg_sys::BYTEAOID => Encoding::Bytea,
        pg_sys::DATEOID => Encoding::Date,
        pg_sys::TIMESTAMPOID => Encoding::Timestamp,
        pg_sys::TIMESTAMPTZOID => Encoding::TimestampTz,
        pg_sys::TIMEOID => Encoding::Time,
        pg_sys::UUIDOID => Encoding::Uuid,
        _ => Encoding::TextIo,
    }
}

/// A table's definition and its columns' type oids (in column order).
pub struct DescribedTable {
    pub def: TableDef,
    pub type_oids: Vec<pg_sys::Oid>,
}

const COLUMNS_QUERY: &str = "
SELECT a.attname::text,
       pg_catalog.format_type(a.atttypid, a.atttypmod),
       a.atttypmod,
       a.attnotnull,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid),
       a.attgenerated::text,
       a.attidentity::text,
       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
            THEN pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) END,
       CASE WHEN d.adbin IS NOT NULL AND a.attgenerated = '' AND a.attidentity = ''
            THEN pg_catalog.pg_get_serial_sequence(
                     pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname), a.attname) END,
       a.atttypid
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
  LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum";

const CONSTRAINTS_QUERY: &str = "
SELECT con.conname::text, con.contype::text, pg_catalog.pg_get_constraintdef(con.oid),
       ARRAY(SELECT a.attname::text
               FROM pg_catalog.unnest(con.conkey) WITH ORDINALITY AS k(attnum, position)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
              WHERE con.contype IN ('p', 'u')
              ORDER BY k.position)
  FROM pg_catalog.pg_constraint con
 WHERE con.conrelid = $1 AND con.contype IN ('p', 'u', 'c', 'x', 'f')
 ORDER BY con.contype = 'f', con.contype <> 'p', con.conname";

const INDEXES_QUERY: &str = "
SELECT pg_catalog.pg_get_indexdef(i.indexrelid)
  FROM pg_catalog.pg_index i
 WHERE i.indrelid = $1
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid)
 ORDER BY i.indexrelid";

const ACCESS_QUERY: &str = "
SELECT pg_catalog.pg_get_userbyid(c.relowner)::text, c.relrowsecurity, c.relforcerowsecurity
  FROM pg_catalog.pg_class c WHERE c.oid = $1";

const GRANTS_QUERY: &str = "
SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END,
       a.privilege_type::text, a.is_grantable
  FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
 WHERE c.oid = $1 AND a.grantee <> c.relowner
 ORDER BY 1, 2";

const POLICIES_QUERY: &str = "
SELECT p.polname::text, p.polpermissive,
       CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
       ARRAY(SELECT pg_catalog.pg_get_userbyid(r)::text FROM pg_catalog.unnest(p.polroles) r WHERE r <> 0 ORDER BY 1),
       pg_catalog.pg_get_expr(p.polqual, p.polrelid), pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)
  FROM pg_catalog.pg_policy p WHERE p.polrelid = $1 ORDER BY p.polname";

const REFERENCED_BY_QUERY: &str = "
SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname), con.conname::text, con.confdeltype::text
  FROM pg_catalog.pg_constraint con
  JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE con.contype = 'f' AND con.confrelid = $1 AND con.conparentid = 0
 ORDER BY 1, 2";

const TABLE_QUERY: &str = "
SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence = 'u'
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = $1";

/// Reads a table's definition. Expressions, types and names are rendered with `search_path =
/// pg_catalog`, so everything outside pg_catalog comes out schema-qualified and a restore means the
/// same objects whatever the restorer's search_path.
pub fn describe(relid: pg_sys::Oid) -> DescribedTable {
    crate::snapshots::restore::ddl::with_catalog_search_path(|| describe_now(relid))
}

fn describe_now(relid: pg_sys::Oid) -> DescribedTable {
    let described = Spi::connect(|client| {
        let row = client.select(TABLE_QUERY, Some(1), &[relid.into()])?.first();
        let schema: String = row.get(1)?.unwrap_or_default();
        let name: String = row.get(2)?.unwrap_or_default();
        let relkind: String = row.get(3)?.unwrap_or_default();
        let unlogged: bool = row.get(4)?.unwrap_or(false);
        if relkind != "r" && relkind != "p" {
            raise_with(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                &format!("\"{schema}\".\"{name}\" is not a table (relkind {relkind})"),
                "Snapshots are taken of tables and partitioned tables; for a view or materialized view, snapshot the tables it reads.",
            );
        }
        let mut columns = Vec::new();
        let mut type_oids = Vec::new();
        for row in client.select(COLUMNS_QUERY, None, &[relid.into()])? {
            let generated = row.get::<String>(6)?.filter(|g| g == "s");
            let identity = match row.get::<String>(7)?.as_deref() {
                Some("a") => Some("ALWAYS".to_string()),
                Some("d") => Some("BY DEFAULT".to_string()),
                _ => None,
            };
            let expression: Option<String> = row.get(5)?;
            let type_oid: pg_sys::Oid = row.get(10)?.expect("atttypid is never null");
            columns.push(ColumnDef {
                name: row.get(1)?.unwrap_or_default(),
                type_name: row.get(2)?.unwrap_or_default(),
                typmod: row.get(3)?.unwrap_or(-1),
                not_null: row.get(4)?.unwrap_or(false),
                default: if generated.is_some() { None } else { expression.clone() },
                generated: generated.and(expression),
                identity,
                collation: row.get(8)?,
                default_sequence: row.get(9)?,
                encoding: encoding_for(type_oid),
            });
            type_oids.push(type_oid);
        }
        let mut constraints = Vec::new();
        for row in client.select(CONSTRAINTS_QUERY, None, &[relid.into()])? {
            constraints.push(ConstraintDef {
                name: row.get(1)?.unwrap_or_default(),
                kind: row.get(2)?.unwrap_or_default(),
                definition: row.get(3)?.unwrap_or_default(),
                columns: row.get::<Vec<String>>(4)?.unwrap_or_default(),
            });
        }
        let mut indexes = Vec::new();
        for row in client.select(INDEXES_QUERY, None, &[relid.into()])? {
            indexes.extend(row.get::<String>(1)?);
        }
        let row = client.select(ACCESS_QUERY, Some(1), &[relid.into()])?.first();
        let mut access = AccessDef {
            owner: row.get(1)?.unwrap_or_default(),
            grants: Vec::new(),
            row_security: row.get(2)?.unwrap_or(false),
            force_row_security: row.get(3)?.unwrap_or(false),
            policies: Vec::new(),
        };
        for row in client.select(GRANTS_QUERY, None, &[relid.into()])? {
            access.grants.push(GrantDef {
                grantee: row.get(1)?,
                privilege: row.get(2)?.unwrap_or_default(),
                grantable: row.get(3)?.unwrap_or(false),
            });
        }
        for row in client.select(POLICIES_QUERY, None, &[relid.into()])? {
            access.policies.push(PolicyDef {
                name: row.get(1)?.unwrap_or_default(),
                permissive: row.get(2)?.unwrap_or(true),
                command: row.get(3)?.unwrap_or_default(),
                roles: row.get::<Vec<String>>(4)?.unwrap_or_default(),
                using: row.get(5)?,
                with_check: row.get(6)?,
            });
        }
        let mut referenced_by = Vec::new();
        for row in client.select(REFERENCED_BY_QUERY, None, &[relid.into()])? {
            referenced_by.push(ReferencingKey {
                table: row.get(1)?.unwrap_or_default(),
                name: row.get(2)?.unwrap_or_default(),
                on_delete: row.get(3)?.unwrap_or_default(),
            });
        }
        let mut def = TableDef {
            schema,
            name,
            relkind,
            unlogged,
            columns,
            constraints,
            indexes,
            ddl: String::new(),
            access,
            referenced_by,
        };
        def.ddl = def.original_ddl();
        Ok::<_, pgrx::spi::Error>(DescribedTable { def, type_oids })
    });
    described.unwrap_or_else(|e| {
        raise_with(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            &format!("reading the table's definition failed: {e}"),
            "This is a bug in backstop; please report it with the table's definition.",
        )
    })
}
