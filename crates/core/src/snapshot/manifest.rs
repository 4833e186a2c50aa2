//! The snapshot manifest: what a snapshot holds and everything needed to recreate the table it came
//! from, even after that table was dropped.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{qualified_name, quote_ident};
use crate::error::{Error, Result};

pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// How a column's values are stored in Parquet. Exact Arrow types where PostgreSQL's values fit them
/// without loss; `TextIo` (the type's own output function, read back by its input function) for the
/// rest: numeric (NaN and unbounded precision), arrays (per-value dimensions and lower bounds),
/// intervals, network and range types, enums, composites, extension types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// text, varchar, char(n): the stored characters, padding included.
    Text,
    Bytea,
    Date,
    Timestamp,
    TimestampTz,
    Time,
    Uuid,
    TextIo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`: the type as it is written in DDL, typmod included.
    pub type_name: String,
    pub typmod: i32,
    pub not_null: bool,
    pub default: Option<String>,
    /// The expression of a `GENERATED ALWAYS AS (...) STORED` column: recomputed on restore.
    pub generated: Option<String>,
    /// `ALWAYS` or `BY DEFAULT` for identity columns.
    pub identity: Option<String>,
    /// A non-default collation, as a qualified, quoted name.
    pub collation: Option<String>,
    /// The sequence a `nextval(...)` default draws from, if any: it disappears with a dropped table.
    pub default_sequence: Option<String>,
    pub encoding: Encoding,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConstraintDef {
    pub name: String,
    /// pg_constraint.contype: p (primary key), u (unique), c (check), f (foreign key), x (exclusion).
    pub kind: String,
    /// `pg_get_constraintdef`: `PRIMARY KEY (id)`, `CHECK (...)`, ...
    pub definition: String,
    /// Key columns of primary key and unique constraints, in key order.
    #[serde(default)]
    pub columns: Vec<String>,
}

/// A privilege granted on the table (from `aclexplode(relacl)`), re-granted on a restored copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantDef {
    /// Role name; None for PUBLIC.
    pub grantee: Option<String>,
    /// SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES or TRIGGER.
    pub privilege: String,
    pub grantable: bool,
}

/// A row-level security policy of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDef {
    pub name: String,
    pub permissive: bool,
    /// ALL, SELECT, INSERT, UPDATE or DELETE.
    pub command: String,
    /// Role names; empty for PUBLIC.
    pub roles: Vec<String>,
    pub using: Option<String>,
    pub with_check: Option<String>,
}

/// A foreign key of another table that points at this one, with what deleting a row does to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferencingKey {
    /// The referencing table, schema-qualified and quoted.
    pub table: String,
    pub name: String,
    /// `pg_constraint.confdeltype`: a (no action), r (restrict), c (cascade), n (set null), d (set default).
    pub on_delete: String,
}

impl ReferencingKey {
    /// Whether deleting a referenced row changes the referencing table instead of failing.
    pub fn deletes_propagate(&self) -> bool {
        matches!(self.on_delete.as_str(), "c" | "n" | "d")
    }

    pub fn on_delete_sql(&self) -> &'static str {
        match self.on_delete.as_str() {
            "c" => "ON DELETE CASCADE",
            "n" => "ON DELETE SET NULL",
            "d" => "ON DELETE SET DEFAULT",
            "r" => "ON DELETE RESTRICT",
            _ => "ON DELETE NO ACTION",
        }
    }
}

/// Who may see the table's rows, recorded so a restored copy grants no more than the original did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessDef {
    pub owner: String,
    pub grants: Vec<GrantDef>,
    pub row_security: bool,
    pub force_row_security: bool,
    pub policies: Vec<PolicyDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    pub schema: String,
    pub name: String,
    /// `r` (table) or `p` (partitioned table: the snapshot holds every partition's rows).
    pub relkind: String,
    pub unlogged: bool,
    pub columns: Vec<ColumnDef>,
    pub constraints: Vec<ConstraintDef>,
    /// `pg_get_indexdef` of indexes that do not belong to a constraint.
    pub indexes: Vec<String>,
    /// The SQL that recreates the table as it was, under its own name (for reading; restores
    /// rebuild every statement from the validated parts above).
    pub ddl: String,
    /// Owner, grants and row-level security.
    #[serde(default)]
    pub access: AccessDef,
    /// Foreign keys of other tables that reference this one.
    #[serde(default)]
    pub referenced_by: Vec<ReferencingKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataObject {
    pub path: String,
    /// SHA-256 of the Parquet bytes; the object's own trailer must record the same.
    pub sha256: String,
    pub bytes: u64,
    pub stored_bytes: u64,
    pub row_groups: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    pub format_version: u32,
    pub snapshot_id: String,
    pub table: TableDef,
    pub rows: u64,
    /// Order-independent digest of every row's values (see `content`), for restore validation.
    pub content_checksum: String,
    pub data: DataObject,
    /// WAL insert position when the snapshot's rows were read.
    pub lsn: String,
    /// ISO 8601, UTC.
    pub taken_at: String,
    pub taken_at_unix_ms: i64,
    pub database: String,
    pub postgres_version: String,
    pub pg_version_num: u32,
    pub system_identifier: String,
    pub server_encoding: String,
    pub backstop_version: String,
    /// The table's relation file when its rows were read (0.3.0 on): where `table_history` starts
    /// following the table from this snapshot, and how `recover()` knows no change came between
    /// the snapshot and a recovery target (its fast path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation_file: Option<crate::wal::records::RelFile>,
    /// `pg_current_snapshot()` just before the rows were read (0.3.0 on; the rows' own snapshot
    /// is the same or later): which committed transactions the snapshot surely holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mvcc_snapshot: Option<String>,
    /// HMAC-SHA256 of the manifest (this field left out) under the writing cluster's manifest key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authentication {
    /// Which key signed it: the first 8 bytes of SHA-256 of the key, hex.
    pub key_id: String,
    pub hmac_sha256: String,
}

/// A cluster's secret for authenticating the metadata it writes. Manifests are stored in the clear
/// and guarded by unkeyed checksums, so anyone who can write to the repository could otherwise
/// forge one; the key never leaves the cluster (it is not in the repository).
#[derive(Clone)]
pub struct ManifestKey([u8; 32]);

impl ManifestKey {
    pub fn generate() -> Self {
        ManifestKey(rand::random())
    }

    /// From the key file's text: 64 hex digits.
    pub fn parse(text: &str) -> Result<Self> {
        let bytes = hex::decode(text.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
        bytes.map(ManifestKey).ok_or_else(|| Error::InvalidInput("a manifest key file holds 64 hex digits".into()))
    }

    pub fn to_text(&self) -> String {
        hex::encode(self.0)
    }

    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

impl std::fmt::Debug for ManifestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ManifestKey({})", self.id())
    }
}

/// Whether a manifest was written by the cluster holding a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticity {
    Authentic,
    /// No authentication at all (written by an older backstop, or by hand).
    Unsigned,
    /// Signed with another key: another cluster's, or a key this cluster no longer has.
    OtherKey(String),
    /// Claims this cluster's key but the code does not match: altered after it was written.
    Forged,
}

impl Authenticity {
    pub fn describe(&self) -> String {
        match self {
            Authenticity::Authentic => "authenticated by this cluster's manifest key".into(),
            Authenticity::Unsigned => "not authenticated (it carries no authentication code)".into(),
            Authenticity::OtherKey(id) => {
                format!("authenticated by another cluster's manifest key ({id}), not this one's")
            }
            Authenticity::Forged => "altered after it was written: its authentication code does not match".into(),
        }
    }
}

impl SnapshotManifest {
    /// The bytes the authentication code covers: the manifest without its authentication.
    fn signed_bytes(&self) -> Vec<u8> {
        SnapshotManifest { authentication: None, ..self.clone() }.to_json()
    }

    pub fn sign(&mut self, key: &ManifestKey) {
        let mut mac = key.mac();
        mac.update(&self.signed_bytes());
        self.authentication =
            Some(Authentication { key_id: key.id(), hmac_sha256: hex::encode(mac.finalize().into_bytes()) });
    }

    /// Checks the authentication code in constant time.
    pub fn authenticity(&self, key: Option<&ManifestKey>) -> Authenticity {
        let Some(auth) = &self.authentication else { return Authenticity::Unsigned };
        let Some(key) = key.filter(|k| k.id() == auth.key_id) else {
            return Authenticity::OtherKey(auth.key_id.clone());
        };
        let Ok(code) = hex::decode(&auth.hmac_sha256) else { return Authenticity::Forged };
        let mut mac = key.mac();
        mac.update(&self.signed_bytes());
        match mac.verify_slice(&code) {
            Ok(()) => Authenticity::Authentic,
            Err(_) => Authenticity::Forged,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        bytes.push(b'\n');
        bytes
    }

    pub fn from_json(key: &str, bytes: &[u8]) -> Result<Self> {
        let manifest: SnapshotManifest = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            key: key.to_string(),
            reason: format!("it is not a snapshot manifest ({e})"),
        })?;
        if manifest.format_version > MANIFEST_FORMAT_VERSION {
            return Err(Error::Corrupt {
                key: key.to_string(),
                reason: format!(
                    "it has format version {}, newer than this backstop reads ({MANIFEST_FORMAT_VERSION}); upgrade backstop",
                    manifest.format_version
                ),
            });
        }
        Ok(manifest)
    }
}

/// Options for [`TableDef::create_table_sql`].
pub struct CreateOptions<'a> {
    pub schema: &'a str,
    pub table: &'a str,
    /// Keep constraint names (recreating the original) or let PostgreSQL name them (a side-by-side
    /// copy, whose index names would collide with the original's).
    pub keep_constraint_names: bool,
    /// Whether a column's default can be kept (its sequence may be gone with the dropped table).
    pub keep_default: &'a dyn Fn(&ColumnDef) -> bool,
}

impl TableDef {
    pub fn qualified_name(&self) -> String {
        qualified_name(&self.schema, &self.name)
    }

    /// Columns loaded on restore: every column except generated ones, which PostgreSQL recomputes.
    pub fn loaded_columns(&self) -> impl Iterator<Item = (usize, &ColumnDef)> {
        self.columns.iter().enumerate().filter(|(_, c)| c.generated.is_none())
    }

    pub fn primary_key(&self) -> Option<&ConstraintDef> {
        self.constraints.iter().find(|c| c.kind == "p")
    }

    /// `CREATE TABLE` with columns, defaults, NOT NULL, identity and generated columns; constraints
    /// come separately ([`TableDef::constraint_sql`]) so they can be added after the bulk load.
    pub fn create_table_sql(&self, options: &CreateOptions<'_>) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|column| {
                let mut sql = format!("{} {}", quote_ident(&column.name), column.type_name);
                if let Some(collation) = &column.collation {
                    sql.push_str(&format!(" COLLATE {collation}"));
                }
                if let Some(expression) = &column.generated {
                    sql.push_str(&format!(" GENERATED ALWAYS AS ({expression}) STORED"));
                } else if let Some(kind) = &column.identity {
                    sql.push_str(&format!(" GENERATED {kind} AS IDENTITY"));
                } else if let Some(default) = column.default.as_ref().filter(|_| (options.keep_default)(column)) {
                    sql.push_str(&format!(" DEFAULT {default}"));
                }
                if column.not_null {
                    sql.push_str(" NOT NULL");
                }
                sql
            })
            .collect();
        format!(
            "CREATE {}TABLE {} (\n    {}\n)",
            if self.unlogged { "UNLOGGED " } else { "" },
            qualified_name(options.schema, options.table),
            columns.join(",\n    ")
        )
    }

    /// `ALTER TABLE ... ADD CONSTRAINT` for the constraints of the given kinds, in manifest order.
    pub fn constraint_sql(&self, options: &CreateOptions<'_>, kinds: &[&str]) -> Vec<String> {
        let target = qualified_name(options.schema, options.table);
        self.constraints
            .iter()
            .filter(|c| kinds.contains(&c.kind.as_str()))
            .map(|c| {
                // Check constraint names are per table and keep their meaning; index-backed ones
                // would collide with the original's indexes.
                if options.keep_constraint_names || c.kind == "c" {
                    format!("ALTER TABLE {target} ADD CONSTRAINT {} {}", quote_ident(&c.name), c.definition)
                } else {
                    format!("ALTER TABLE {target} ADD {}", c.definition)
                }
            })
            .collect()
    }

    /// The script that recreates the table under its own name: table, constraints, indexes.
    pub fn original_ddl(&self) -> String {
        let options = CreateOptions {
            schema: &self.schema,
            table: &self.name,
            keep_constraint_names: true,
            keep_default: &|_| true,
        };
        let mut statements = vec![self.create_table_sql(&options)];
        statements.extend(self.constraint_sql(&options, &["p", "u", "c", "x", "f"]));
        statements.extend(self.indexes.iter().cloned());
        statements.iter().map(|s| format!("{s};\n")).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn column(name: &str, type_name: &str, encoding: Encoding) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            type_name: type_name.into(),
            typmod: -1,
            not_null: false,
            default: None,
            generated: None,
            identity: None,
            collation: None,
            default_sequence: None,
            encoding,
        }
    }

    pub(crate) fn sample_table() -> TableDef {
        let mut id = column("id", "bigint", Encoding::Int64);
        id.not_null = true;
        id.default = Some("nextval('orders_id_seq'::regclass)".into());
        id.default_sequence = Some("public.orders_id_seq".into());
        let mut total = column("Total \"gross\"", "numeric(12,2)", Encoding::TextIo);
        total.not_null = true;
        let mut doubled = column("doubled", "numeric", Encoding::TextIo);
        doubled.generated = Some("(\"Total \"\"gross\"\"\" * (2)::numeric)".into());
        let mut name = column("name", "text", Encoding::Text);
        name.collation = Some("\"C\"".into());
        let mut table = TableDef {
            schema: "public".into(),
            name: "orders".into(),
            relkind: "r".into(),
            unlogged: false,
            columns: vec![id, total, doubled, name],
            constraints: vec![
                ConstraintDef {
                    name: "orders_pkey".into(),
                    kind: "p".into(),
                    definition: "PRIMARY KEY (id)".into(),
                    columns: vec!["id".into()],
                },
                ConstraintDef {
                    name: "positive".into(),
                    kind: "c".into(),
                    definition: "CHECK ((\"Total \"\"gross\"\"\" > (0)::numeric))".into(),
                    columns: vec![],
                },
            ],
            indexes: vec!["CREATE INDEX orders_name ON public.orders USING btree (name)".into()],
            ddl: String::new(),
            access: AccessDef::default(),
            referenced_by: vec![],
        };
        table.ddl = table.original_ddl();
        table
    }

    #[test]
    fn ddl_recreates_the_original_with_names_and_indexes() {
        let ddl = sample_table().ddl;
        assert!(ddl.starts_with("CREATE TABLE \"public\".\"orders\" (\n"), "{ddl}");
        assert!(ddl.contains("\"id\" bigint DEFAULT nextval('orders_id_seq'::regclass) NOT NULL"), "{ddl}");
        assert!(ddl.contains("\"Total \"\"gross\"\"\" numeric(12,2) NOT NULL"), "{ddl}");
        assert!(ddl.contains("GENERATED ALWAYS AS ((\"Total \"\"gross\"\"\" * (2)::numeric)) STORED"), "{ddl}");
        assert!(ddl.contains("\"name\" text COLLATE \"C\""), "{ddl}");
        assert!(ddl.contains("ADD CONSTRAINT \"orders_pkey\" PRIMARY KEY (id);"), "{ddl}");
        assert!(ddl.contains("CREATE INDEX orders_name ON public.orders USING btree (name);"), "{ddl}");
    }

    #[test]
    fn a_side_by_side_copy_lets_postgres_name_index_backed_constraints() {
        let table = sample_table();
        let options = CreateOptions {
            schema: "public",
            table: "orders_recovered",
            keep_constraint_names: false,
            keep_default: &|c| c.default_sequence.is_none(),
        };
        let create = table.create_table_sql(&options);
        assert!(create.contains("\"id\" bigint NOT NULL"), "{create}");
        let constraints = table.constraint_sql(&options, &["p", "c"]);
        assert_eq!(
            constraints,
            vec![
                "ALTER TABLE \"public\".\"orders_recovered\" ADD PRIMARY KEY (id)".to_string(),
                "ALTER TABLE \"public\".\"orders_recovered\" ADD CONSTRAINT \"positive\" CHECK ((\"Total \"\"gross\"\"\" > (0)::numeric))".to_string(),
            ]
        );
        let loaded: Vec<&str> = table.loaded_columns().map(|(_, c)| c.name.as_str()).collect();
        assert_eq!(loaded, ["id", "Total \"gross\"", "name"]);
    }

    #[test]
    fn manifests_round_trip_and_newer_formats_are_refused() {
        let manifest = SnapshotManifest {
            format_version: MANIFEST_FORMAT_VERSION,
            snapshot_id: "snap_00000001".into(),
            table: sample_table(),
            rows: 3,
            content_checksum: "x".into(),
            data: DataObject {
                path: "data.parquet".into(),
                sha256: "00".into(),
                bytes: 1,
                stored_bytes: 2,
                row_groups: 1,
            },
            lsn: "0/1000000".into(),
            taken_at: "2026-11-21T00:00:00Z".into(),
            taken_at_unix_ms: 0,
            database: "postgres".into(),
            postgres_version: "PostgreSQL 15".into(),
            pg_version_num: 150000,
            system_identifier: "1".into(),
            server_encoding: "UTF8".into(),
            backstop_version: "0.1.0".into(),
            relation_file: None,
            mvcc_snapshot: None,
            authentication: None,
        };
        let bytes = manifest.to_json();
        assert_eq!(SnapshotManifest::from_json("k", &bytes).unwrap(), manifest);
        let mut newer = manifest.clone();
        newer.format_version = MANIFEST_FORMAT_VERSION + 1;
        assert!(matches!(SnapshotManifest::from_json("k", &newer.to_json()), Err(Error::Corrupt { .. })));
        assert!(matches!(SnapshotManifest::from_json("k", b"{\"truncated"), Err(Error::Corrupt { .. })));

        // Authentication: only the key that signed it vouches for it, and any change breaks it.
        let key = ManifestKey::generate();
        let mut signed = manifest.clone();
        assert_eq!(signed.authenticity(Some(&key)), Authenticity::Unsigned);
        signed.sign(&key);
        let read = SnapshotManifest::from_json("k", &signed.to_json()).unwrap();
        assert_eq!(read.authenticity(Some(&key)), Authenticity::Authentic);
        assert_eq!(read.authenticity(None), Authenticity::OtherKey(key.id()));
        assert_eq!(read.authenticity(Some(&ManifestKey::generate())), Authenticity::OtherKey(key.id()));
        let mut forged = read.clone();
        forged.table.constraints[1].definition = "CHECK (true); CREATE ROLE x SUPERUSER; --".into();
        assert_eq!(forged.authenticity(Some(&key)), Authenticity::Forged);
        assert_eq!(ManifestKey::parse(&key.to_text()).unwrap().id(), key.id());
        assert!(ManifestKey::parse("zz").is_err());
    }
}
