//! Guided table recovery: `restore_table` (verify, then recreate and bulk-load a snapshot into a
//! new table), `restore_validate` (compare it with the manifest), `copyback_plan` (the SQL to bring
//! rows back, only after validation passed) and `recover` (all of it, step by step).

pub mod ddl;
mod load;

use std::io::Seek;

use backstop_core::snapshot::content::ContentDigest;
use backstop_core::snapshot::copyback::{self, CopybackPlan};
use backstop_core::snapshot::manifest::{CreateOptions, SnapshotManifest};
use backstop_core::snapshot::parquet_file::read_batches;
use backstop_core::snapshot::stored::{self, StoredSnapshot};
use backstop_core::snapshot::{qualified_name, quote_ident, SnapshotId};
use backstop_core::{Error, Repository};
use ddl::Statement;
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;
use pgrx::prelude::*;

use crate::errors::{notice, raise, raise_with, OrRaise};
use crate::snapshots::{catalog, fetch_verified, list_with_manifests, megabytes, reader, resolve_table_name, Listed};
use crate::{io, repo};

const NAMEDATALEN: usize = 64;
const RECOVERED_SUFFIX: &str = "_recovered";
const LOAD_BATCH_ROWS: usize = 8192;

extension_sql_file!("../../../sql/restores.sql", name = "restores_table");

pub(crate) type PlanRow = (String, String, String);

fn spi_failed(e: pgrx::spi::Error) -> ! {
    raise_with(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, &e.to_string(), "This is a bug in backstop.")
}

fn regclass_of(qualified: &str) -> Option<pg_sys::Oid> {
    Spi::get_one_with_args::<pg_sys::Oid>("SELECT pg_catalog.to_regclass($1)::oid", &[qualified.into()])
        .unwrap_or_else(|e| spi_failed(e))
}

fn parse_name(text: &str, default_schema: &str) -> (String, String) {
    let parts: Vec<String> = Spi::get_one_with_args::<Vec<String>>("SELECT pg_catalog.parse_ident($1)", &[text.into()])
        .unwrap_or_else(|e| {
            raise_with(
                PgSqlErrorCode::ERRCODE_INVALID_NAME,
                &e.to_string(),
                "Name the table as [schema.]table, quoting names as in SQL.",
            )
        })
        .unwrap_or_default();
    match parts.as_slice() {
        [table] => (default_schema.to_string(), table.clone()),
        [schema, table] => (schema.clone(), table.clone()),
        _ => raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_NAME,
            &format!("\"{text}\" is not a table name"),
            "Name the table as [schema.]table, quoting names as in SQL.",
        ),
    }
}

/// `<table>_recovered`, shortened so PostgreSQL does not truncate the suffix away.
fn default_target_name(table: &str) -> String {
    let mut base = table.to_string();
    while base.len() + RECOVERED_SUFFIX.len() > NAMEDATALEN - 1 {
        base.pop();
    }
    format!("{base}{RECOVERED_SUFFIX}")
}

struct Target {
    schema: String,
    name: String,
    replace: bool,
}

impl Target {
    fn qualified(&self) -> String {
        qualified_name(&self.schema, &self.name)
    }
}

fn resolve_target(source: (&str, &str), target_table: Option<&str>, replace_target: Option<&str>) -> Target {
    let (schema, name) = match target_table {
        Some(text) => parse_name(text, source.0),
        None => (source.0.to_string(), default_target_name(source.1)),
    };
    let qualified = qualified_name(&schema, &name);
    let exists = regclass_of(&qualified).is_some();
    let replace = replace_target.map(|text| parse_name(text, source.0)) == Some((schema.clone(), name.clone()));
    if exists && !replace {
        raise_with(
            PgSqlErrorCode::ERRCODE_DUPLICATE_TABLE,
            &format!("restore target {qualified} already exists; refusing to touch it"),
            &format!("Pick another target_table, or replace it by naming it: replace_target => '{qualified}'."),
        );
    }
    Target { schema, name, replace: exists && replace }
}

/// The snapshots to try, newest first: the one asked for, or every one with a readable manifest.
fn candidates(
    repository: &Repository,
    schema: &str,
    table: &str,
    snapshot_id: Option<&str>,
) -> Vec<(StoredSnapshot, SnapshotManifest)> {
    let qualified = qualified_name(schema, table);
    if let Some(text) = snapshot_id {
        let id = SnapshotId::parse(text).or_raise();
        let snapshot = StoredSnapshot { schema: schema.to_string(), table: table.to_string(), id };
        return match io::block_on(stored::read_manifest(repository, &snapshot)) {
            Ok(manifest) => vec![(snapshot, manifest)],
            Err(Error::NotFound { .. }) => raise_with(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                &format!("snapshot {text} of {qualified} does not exist in {}", repository.describe()),
                &format!(
                    "SELECT * FROM backstop.snapshots('{}') lists the snapshots there are.",
                    qualified.replace('\'', "''")
                ),
            ),
            Err(e) => raise(&e),
        };
    }
    let mut found = Vec::new();
    for Listed { snapshot, manifest } in list_with_manifests(repository, Some((schema, table))) {
        match manifest {
            Ok(manifest) => found.push((snapshot, manifest)),
            Err(Error::NotFound { .. }) => {}
            // Not signed by a trusted key: stop rather than fall back to an older snapshot, which
            // would hide a forgery behind older rows.
            Err(e @ Error::Unauthenticated { .. }) => raise(&e),
            Err(e) => pgrx::warning!("skipping snapshot {}: {e}", snapshot.id),
        }
    }
    if found.is_empty() {
        raise_with(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            &format!("the repository {} has no usable snapshot of {qualified}", repository.describe()),
            "Take snapshots with backstop.snapshot_table(); backstop.snapshots() lists what there is.",
        );
    }
    found
}

/// `trust_unauthenticated => true` is refused: a server-side restore never runs DDL from a
/// manifest no trusted key signed. The parameter stays so that calls passing false keep working.
/// (Every manifest reaches a restore through the repository's one read path, which has already
/// checked its signature, or the adoption record of a manifest of backstop 0.2.)
fn refuse_unauthenticated_opt_in(trust_unauthenticated: bool) {
    if trust_unauthenticated {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "trust_unauthenticated => true is no longer accepted: a restore uses a snapshot manifest only when a trusted key signed it",
            "To restore snapshots another cluster wrote, add its public key (backstop.repository_key() there) to backstop.trusted_keys here. \
             Snapshots of backstop 0.2 restore once the cluster that wrote them ran SELECT * FROM backstop.adopt_repository().",
        );
    }
}

/// A restore grants no access the caller did not have: for an existing table, SELECT on it with
/// no row-level security hiding rows; for a dropped one, membership in its recorded owner role.
fn check_may_restore(manifest: &SnapshotManifest) {
    let original = manifest.table.qualified_name();
    let (superuser, existing, can_read, rls_hides, owner_member) = Spi::connect(|client| {
        let row = client
            .select(
                "SELECT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user),
                        pg_catalog.to_regclass($1) IS NOT NULL,
                        pg_catalog.has_table_privilege(pg_catalog.to_regclass($1), 'SELECT'),
                        pg_catalog.row_security_active(pg_catalog.to_regclass($1)),
                        EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $2)
                            AND pg_catalog.pg_has_role($2, 'MEMBER')",
                Some(1),
                &[original.clone().into(), manifest.table.access.owner.clone().into()],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>((
            row.get::<bool>(1)?.unwrap_or(false),
            row.get::<bool>(2)?.unwrap_or(false),
            row.get::<bool>(3)?.unwrap_or(false),
            row.get::<bool>(4)?.unwrap_or(false),
            row.get::<bool>(5)?.unwrap_or(false),
        ))
    })
    .unwrap_or_else(|e| spi_failed(e));
    if superuser {
        return;
    }
    if existing && !can_read {
        raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            &format!("permission denied: restoring {original} needs SELECT on it"),
            "A restore gives its caller the table's rows; run it as a role that may read them.",
        );
    }
    if existing && rls_hides {
        raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            &format!("row-level security hides rows of {original} from the current role; a restore would show them"),
            "Run the restore as the table owner or a role with BYPASSRLS.",
        );
    }
    if !existing && !owner_member {
        let owner = &manifest.table.access.owner;
        raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            &format!(
                "permission denied: {original} no longer exists and restoring it needs membership in its owner role {}",
                if owner.is_empty() { "(not recorded)".to_string() } else { quote_ident(owner) }
            ),
            "Run the restore as the table's owner (or a member of its role), or as a superuser.",
        );
    }
}

/// Writes backstop.restores as its owner: members of backstop_admin may read it, never write it,
/// so the validation gate in front of copy-back plans cannot be forged.
fn as_restores_owner<T>(f: impl FnOnce() -> T) -> T {
    crate::owner::as_owner_of("backstop.restores", f)
}

/// A snapshot whose data was read completely and matched every checksum, spooled to an unlinked
/// temporary file and opened as Parquet: nothing in the database was touched yet.
struct Verified {
    reader: ParquetRecordBatchReader,
    key: String,
}

fn temp_dir() -> std::path::PathBuf {
    let data_dir = unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy().into_owned();
    std::path::Path::new(&data_dir).join("base").join("pgsql_tmp")
}

fn verify_snapshot(
    repository: &Repository,
    snapshot: &StoredSnapshot,
    manifest: &SnapshotManifest,
) -> Result<Verified, Error> {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    // The spool is an unnamed (O_TMPFILE) file: a crash leaves nothing behind to clean up.
    let limit_kb = unsafe { pg_sys::temp_file_limit };
    if limit_kb >= 0 && manifest.data.bytes > limit_kb as u64 * 1024 {
        raise_with(
            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            &format!(
                "snapshot {} needs {} of temporary space to be verified before it is restored, more than temp_file_limit ({limit_kb} kB)",
                snapshot.id,
                megabytes(manifest.data.bytes)
            ),
            "Raise temp_file_limit for this session (SET temp_file_limit = ...) or restore on a server with room; nothing was written.",
        );
    }
    backstop_core::disk::check_room(&dir, manifest.data.bytes)?;
    let file = tempfile::tempfile_in(&dir).map_err(|e| Error::io("create a temporary file in", &dir, e))?;
    let total = manifest.data.bytes;
    let mut last = std::time::Instant::now();
    let mut file = fetch_verified(repository, snapshot, manifest, file, |copied| {
        if last.elapsed() >= crate::snapshots::PROGRESS_INTERVAL {
            last = std::time::Instant::now();
            notice(&format!(
                "snapshot {}: {} of {} read and verified",
                snapshot.id,
                megabytes(copied),
                megabytes(total)
            ));
        }
    })?;
    file.rewind().map_err(|e| Error::io("rewind", &dir, e))?;
    let key = repository.key(&backstop_core::layout::snapshot_data(&snapshot.schema, &snapshot.table, &snapshot.id));
    let (reader, rows) = read_batches(&key, file, &manifest.table, LOAD_BATCH_ROWS)?;
    if rows != manifest.rows {
        return Err(Error::Corrupt {
            key,
            reason: format!("it holds {rows} rows but its manifest records {}", manifest.rows),
        });
    }
    Ok(Verified { reader, key })
}

fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| spi_failed(e));
}

/// The statements that create the target, rebuilt from validated parts ([`ddl`]): the table, then
/// (after the load) its constraints, row-level security policies and the original's grants.
/// Call under [`ddl::with_catalog_search_path`].
fn target_ddl(manifest: &SnapshotManifest, target: &Target) -> (String, Vec<String>) {
    let table = ddl::validated_table(manifest);
    let keep_default = |column: &backstop_core::snapshot::ColumnDef| {
        column.default_sequence.as_deref().is_none_or(|sequence| regclass_of(sequence).is_some())
    };
    let options = CreateOptions {
        schema: &target.schema,
        table: &target.name,
        keep_constraint_names: false,
        keep_default: &keep_default,
    };
    let create = ddl::checked(manifest, table.create_table_sql(&options), Statement::CreateTable);
    // Foreign keys are left out: they would check the restored rows against today's parents.
    let mut after: Vec<String> = table
        .constraint_sql(&options, &["p", "u", "c", "x"])
        .into_iter()
        .map(|sql| ddl::checked(manifest, sql, Statement::AddConstraint))
        .collect();
    after.extend(
        ddl::policy_sql(&table, &target.qualified())
            .into_iter()
            .map(|sql| ddl::checked(manifest, sql, Statement::CreatePolicy)),
    );
    after.extend(ddl::access_sql(&table, &target.schema, &target.name));
    (create, after)
}

/// Creates the target and loads the verified rows into it; returns the rows loaded.
fn load(manifest: &SnapshotManifest, snapshot: &StoredSnapshot, verified: Verified, target: &Target) -> u64 {
    let qualified = target.qualified();
    if target.replace {
        notice(&format!("dropping {qualified}, as replace_target asked"));
        run(&format!("DROP TABLE {qualified}"));
    }
    let (create, constraints) = ddl::with_catalog_search_path(|| target_ddl(manifest, target));
    ddl::with_catalog_search_path(|| run(&create));
    let relid = regclass_of(&qualified).expect("the target was just created");
    let columns: Vec<String> = manifest.table.loaded_columns().map(|(_, c)| c.name.clone()).collect();
    let indexes: Vec<usize> = manifest.table.loaded_columns().map(|(i, _)| i).collect();
    let label = format!("restore of {} into {qualified}", snapshot.id);
    let source = load::LoadSource::new(verified.reader, verified.key.clone(), indexes, manifest.rows, label);
    let rows = load::copy_into(relid, &columns, source);
    if rows != manifest.rows {
        raise(&Error::Corrupt {
            key: verified.key,
            reason: format!("{rows} rows were loaded but its manifest records {}", manifest.rows),
        });
    }
    ddl::with_catalog_search_path(|| {
        for statement in constraints {
            run(&statement);
        }
        give_to_original_owner(manifest, target);
    });
    as_restores_owner(|| {
        Spi::run_with_args(
            "INSERT INTO backstop.restores (target_oid, target_table, source_table, snapshot_id, rows, trusted_unauthenticated)
             VALUES ($1, $2, $3, $4, $5, false)",
            &[
                relid.into(),
                qualified.clone().into(),
                manifest.table.qualified_name().into(),
                snapshot.id.to_string().into(),
                (rows as i64).into(),
            ],
        )
        .unwrap_or_else(|e| spi_failed(e))
    });
    rows
}

/// The restored copy belongs to the original's owner when the caller may give it to them (a
/// superuser, or a member of that role whose role may create in the schema); otherwise the caller
/// keeps it, with the original's grants and policies, having shown it may read those rows.
fn give_to_original_owner(manifest: &SnapshotManifest, target: &Target) {
    let owner = &manifest.table.access.owner;
    if owner.is_empty() {
        return;
    }
    let allowed = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)
            AND ((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
                 OR (pg_catalog.pg_has_role($1, 'MEMBER')
                     AND pg_catalog.has_schema_privilege($1, $2, 'CREATE')))",
        &[owner.clone().into(), target.schema.clone().into()],
    )
    .unwrap_or_else(|e| spi_failed(e))
    .unwrap_or(false);
    if allowed {
        run(&format!("ALTER TABLE {} OWNER TO {}", target.qualified(), quote_ident(owner)));
    }
}

fn describe_snapshot(snapshot: &StoredSnapshot, manifest: &SnapshotManifest) -> String {
    format!(
        "snapshot {} of {} taken {} ({} rows, LSN {})",
        snapshot.id,
        manifest.table.qualified_name(),
        manifest.taken_at,
        manifest.rows,
        manifest.lsn
    )
}

/// Restores a snapshot into a new table (by default `<table>_recovered`) and returns the rows
/// restored. Everything is verified before anything is written; any failure leaves nothing behind.
#[pg_extern(volatile, parallel_unsafe)]
fn restore_table(
    table_name: &str,
    snapshot_id: default!(Option<&str>, "NULL"),
    target_table: default!(Option<&str>, "NULL"),
    dry_run: default!(bool, false),
    replace_target: default!(Option<&str>, "NULL"),
    trust_unauthenticated: default!(bool, false),
) -> i64 {
    refuse_unauthenticated_opt_in(trust_unauthenticated);
    restore(table_name, snapshot_id, target_table, dry_run, replace_target).0 as i64
}

/// [`restore_table`] for Rust callers (the drill): the rows restored (or that a dry run would
/// restore) and the restored table's qualified name.
pub fn restore(
    table_name: &str,
    snapshot_id: Option<&str>,
    target_table: Option<&str>,
    dry_run: bool,
    replace_target: Option<&str>,
) -> (u64, String) {
    let repository = repo::open_checked().or_raise();
    let (schema, table) = resolve_table_name(&repository, table_name);
    let target = resolve_target((&schema, &table), target_table, replace_target);
    let (snapshot, manifest) = candidates(&repository, &schema, &table, snapshot_id).remove(0);
    check_may_restore(&manifest);
    notice(&format!("verifying {}", describe_snapshot(&snapshot, &manifest)));
    let verified = verify_snapshot(&repository, &snapshot, &manifest).or_raise();
    if dry_run {
        let (create, constraints) = ddl::with_catalog_search_path(|| target_ddl(&manifest, &target));
        let replacing = if target.replace { format!("drop {} and ", target.qualified()) } else { String::new() };
        notice(&format!(
            "dry run: the snapshot verified; a restore would {replacing}create {} and load {} rows:\n{create};\n{}",
            target.qualified(),
            manifest.rows,
            constraints.iter().map(|c| format!("{c};")).collect::<Vec<_>>().join("\n")
        ));
        notice("dry run: nothing was written");
        return (manifest.rows, target.qualified());
    }
    let rows = load(&manifest, &snapshot, verified, &target);
    notice(&format!(
        "restored {rows} rows into {}; next: SELECT * FROM backstop.restore_validate('{}')",
        target.qualified(),
        target.qualified().replace('\'', "''")
    ));
    (rows, target.qualified())
}

struct RestoreRecord {
    relid: pg_sys::Oid,
    target: String,
    source: (String, String),
    snapshot_id: String,
    validation_passed: Option<bool>,
}

fn restore_record(target_table: &str) -> RestoreRecord {
    let relid = Spi::get_one_with_args::<pg_sys::Oid>("SELECT pg_catalog.to_regclass($1)::oid", &[target_table.into()])
        .unwrap_or_else(|e| {
            raise_with(
                PgSqlErrorCode::ERRCODE_INVALID_NAME,
                &e.to_string(),
                "Name the restored table as [schema.]table.",
            )
        })
        .unwrap_or_else(|| {
            raise_with(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                &format!("table {target_table} does not exist"),
                "Name the table restore_table created, e.g. public.orders_recovered.",
            )
        });
    let row = Spi::connect(|client| {
        let rows = client.select(
            "SELECT r.target_table, r.source_table, r.snapshot_id, r.validation_passed
               FROM backstop.restores r WHERE r.target_oid = $1 ORDER BY r.restored_at DESC LIMIT 1",
            Some(1),
            &[relid.into()],
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        let row = rows.first();
        Ok::<_, pgrx::spi::Error>(Some((
            row.get::<String>(1)?.unwrap_or_default(),
            row.get::<String>(2)?.unwrap_or_default(),
            row.get::<String>(3)?.unwrap_or_default(),
            row.get::<bool>(4)?,
        )))
    })
    .unwrap_or_else(|e| spi_failed(e));
    let Some((target, source, snapshot_id, validation_passed)) = row else {
        raise_with(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            &format!("{target_table} was not created by backstop.restore_table"),
            "Validation and copy-back plans are for tables restore_table created; restore one first.",
        )
    };
    // Locking and reading it for validation is for those who may read it anyway.
    let can_read =
        Spi::get_one_with_args::<bool>("SELECT pg_catalog.has_table_privilege($1, 'SELECT')", &[relid.into()])
            .unwrap_or_else(|e| spi_failed(e))
            .unwrap_or(false);
    if !can_read {
        raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            &format!("permission denied for table {target}"),
            "Validation and copy-back plans read the restored table; run them as a role that may.",
        );
    }
    RestoreRecord { relid, target, source: parse_name(&source, "public"), snapshot_id, validation_passed }
}

type CheckRow = (String, String, String, bool);

/// Compares a restored table with its snapshot's manifest; records the verdict.
fn validate(repository: &Repository, record: &RestoreRecord) -> Vec<CheckRow> {
    if record.snapshot_id.starts_with(PITR_RECORD_PREFIX) {
        raise_with(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            &format!("{} was recovered from WAL, not restored from a snapshot", record.target),
            "It was validated when it was loaded (its rows and their checksum equal to what the throwaway server held at the target); ask for its copy-back plans with backstop.copyback_plan().",
        );
    }
    // Nobody may change the rows while they are compared.
    unsafe { pg_sys::LockRelationOid(record.relid, pg_sys::ShareLock as pg_sys::LOCKMODE) };
    let snapshot = StoredSnapshot {
        schema: record.source.0.clone(),
        table: record.source.1.clone(),
        id: SnapshotId::parse(&record.snapshot_id).or_raise(),
    };
    let manifest = io::block_on(stored::read_manifest(repository, &snapshot)).or_raise();
    let described = catalog::describe(record.relid);
    let shape = |columns: &[backstop_core::snapshot::ColumnDef]| {
        columns.iter().map(|c| format!("{} {}", c.name, c.type_name)).collect::<Vec<_>>().join(", ")
    };
    let expected_shape = shape(&manifest.table.columns);
    let found_shape = shape(&described.def.columns);
    let same_encodings =
        described.def.columns.iter().map(|c| c.encoding).eq(manifest.table.columns.iter().map(|c| c.encoding));
    let mut checks: Vec<CheckRow> = vec![(
        "columns".into(),
        expected_shape.clone(),
        found_shape.clone(),
        expected_shape == found_shape && same_encodings,
    )];
    if checks[0].3 {
        let mut digest = ContentDigest::default();
        reader::scan(&described.def, &described.type_oids, |batch| digest.add_batch(batch).or_raise());
        checks.push((
            "rows".into(),
            manifest.rows.to_string(),
            digest.rows().to_string(),
            digest.rows() == manifest.rows,
        ));
        checks.push((
            "content_checksum".into(),
            manifest.content_checksum.clone(),
            digest.checksum(),
            digest.checksum() == manifest.content_checksum,
        ));
    }
    let passed = checks.iter().all(|c| c.3);
    as_restores_owner(|| {
        Spi::run_with_args(
            "UPDATE backstop.restores SET validated_at = now(), validation_passed = $2
              WHERE target_oid = $1 AND restored_at = (SELECT max(restored_at) FROM backstop.restores WHERE target_oid = $1)",
            &[record.relid.into(), passed.into()],
        )
        .unwrap_or_else(|e| spi_failed(e));
    });
    checks
}

fn validated(target_table: &str) -> (RestoreRecord, Vec<CheckRow>) {
    let repository = repo::open_checked().or_raise();
    let record = restore_record(target_table);
    let checks = validate(&repository, &record);
    (record, checks)
}

/// [`restore_validate`] for Rust callers (the drill): each check, and whether it passed.
pub fn validate_restored(target_table: &str) -> Vec<CheckRow> {
    validated(target_table).1
}

/// Checks a table restore_table created against the snapshot's manifest: columns, row count and an
/// order-independent checksum of every value.
#[pg_extern(volatile, parallel_unsafe)]
fn restore_validate(
    target_table: &str,
) -> TableIterator<'static, (name!(check, String), name!(expected, String), name!(found, String), name!(passed, bool))>
{
    let (record, checks) = validated(target_table);
    if checks.iter().all(|c| c.3) {
        notice(&format!(
            "{} matches snapshot {}; next: SELECT * FROM backstop.copyback_plan('{}')",
            record.target,
            record.snapshot_id,
            record.target.replace('\'', "''")
        ));
    } else {
        pgrx::warning!("{} does not match snapshot {}: do not copy its rows back", record.target, record.snapshot_id);
    }
    TableIterator::new(checks)
}

/// The prefix of `backstop.restores.snapshot_id` for tables recovered from WAL at a target
/// (`recover(..., target_time => ...)`), validated when they were loaded.
pub const PITR_RECORD_PREFIX: &str = "pitr:";

fn plans_for(repository: &Repository, record: &RestoreRecord) -> Vec<CopybackPlan> {
    if record.snapshot_id.starts_with(PITR_RECORD_PREFIX) && record.validation_passed == Some(true) {
        return plans_from_original(record);
    }
    if record.validation_passed != Some(true) {
        let quoted = record.target.replace('\'', "''");
        raise_with(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            &format!(
                "{} has {} validation; no copy-back plan until it passes",
                record.target,
                if record.validation_passed == Some(false) { "failed" } else { "not passed" }
            ),
            &format!("Run SELECT * FROM backstop.restore_validate('{quoted}') and check that every row says passed."),
        );
    }
    let snapshot = StoredSnapshot {
        schema: record.source.0.clone(),
        table: record.source.1.clone(),
        id: SnapshotId::parse(&record.snapshot_id).or_raise(),
    };
    let manifest = io::block_on(stored::read_manifest(repository, &snapshot)).or_raise();
    let target = Spi::connect(|client| {
        let row = client
            .select(
                "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
                Some(1),
                &[record.relid.into()],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>((
            row.get::<String>(1)?.unwrap_or_default(),
            row.get::<String>(2)?.unwrap_or_default(),
        ))
    })
    .unwrap_or_else(|e| spi_failed(e));
    // The plans are SQL the operator will run: built only from parts that pass the same checks as
    // a restore's DDL (index and foreign key definitions included).
    let table = ddl::with_catalog_search_path(|| {
        let table = ddl::validated_table(&manifest);
        let options = CreateOptions {
            schema: &table.schema,
            table: &table.name,
            keep_constraint_names: true,
            keep_default: &|_| true,
        };
        for sql in table.constraint_sql(&options, &["f"]) {
            ddl::checked(&manifest, sql, Statement::AddConstraint);
        }
        table
    });
    let original_exists = regclass_of(&table.qualified_name()).is_some();
    copyback::plans(&table, (&target.0, &target.1), original_exists)
}

/// Copy-back plans for a table recovered from WAL: built from the original table's definition as
/// it is now (its primary key decides upsert and insert-missing); a dropped original is put back
/// by renaming the recovered table into its place.
fn plans_from_original(record: &RestoreRecord) -> Vec<CopybackPlan> {
    let target = Spi::connect(|client| {
        let row = client
            .select(
                "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
                Some(1),
                &[record.relid.into()],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>((
            row.get::<String>(1)?.unwrap_or_default(),
            row.get::<String>(2)?.unwrap_or_default(),
        ))
    })
    .unwrap_or_else(|e| spi_failed(e));
    let original = qualified_name(&record.source.0, &record.source.1);
    match regclass_of(&original) {
        Some(relid) => {
            let table = catalog::describe(relid).def;
            copyback::plans(&table, (&target.0, &target.1), true)
        }
        None => vec![CopybackPlan {
            strategy: "rename_into_place",
            description: format!("{original} no longer exists: put the recovered table in its place"),
            sql: format!(
                "ALTER TABLE {} RENAME TO {};",
                qualified_name(&target.0, &target.1),
                quote_ident(&record.source.1)
            ),
        }],
    }
}

fn plan_rows(plans: Vec<CopybackPlan>) -> TableIterator<'static, PlanRow> {
    TableIterator::new(plans.into_iter().map(|p| (p.strategy.to_string(), p.description, p.sql)))
}

/// The SQL to bring a validated restore's rows back: replace all rows, insert the missing ones, or
/// upsert by primary key (or, if the original was dropped, put the restored table in its place).
#[pg_extern(volatile, parallel_unsafe)]
fn copyback_plan(
    target_table: &str,
) -> TableIterator<'static, (name!(strategy, String), name!(description, String), name!(sql, String))> {
    let repository = repo::open_checked().or_raise();
    let record = restore_record(target_table);
    plan_rows(plans_for(&repository, &record))
}

/// The copy-back plans of a table restore_table or recover() created (validated), as rows.
pub(crate) fn plans_of(target_table: &str) -> Vec<PlanRow> {
    let repository = repo::open_checked().or_raise();
    let record = restore_record(target_table);
    plans_for(&repository, &record).into_iter().map(|p| (p.strategy.to_string(), p.description, p.sql)).collect()
}

/// The 3am path from snapshots (`backstop.recover()` without a recovery target, in
/// `crate::recover::sql`): finds the newest snapshot of a table that verifies, restores it next to
/// the original, validates it, and returns the copy-back SQL to review and run.
pub(crate) fn recover_from_snapshot(
    table_name: &str,
    snapshot_id: Option<&str>,
    target_table: Option<&str>,
    replace_target: Option<&str>,
    trust_unauthenticated: bool,
) -> TableIterator<'static, PlanRow> {
    refuse_unauthenticated_opt_in(trust_unauthenticated);
    let repository = repo::open_checked().or_raise();
    let (schema, table) = resolve_table_name(&repository, table_name);
    let source = qualified_name(&schema, &table);
    let target = resolve_target((&schema, &table), target_table, replace_target);
    notice(&format!("step 1/4: finding the newest snapshot of {source} that verifies"));
    let mut chosen = None;
    for (snapshot, manifest) in candidates(&repository, &schema, &table, snapshot_id) {
        // A caller who may not see the rows stops the search (as an unauthenticated manifest does
        // in `candidates`): falling back would hide a missing privilege behind an older snapshot.
        check_may_restore(&manifest);
        notice(&format!("verifying {}", describe_snapshot(&snapshot, &manifest)));
        match verify_snapshot(&repository, &snapshot, &manifest) {
            Ok(verified) => {
                chosen = Some((snapshot, manifest, verified));
                break;
            }
            // Only damage moves on to an older snapshot; a full disk, a wrong key or an unreachable
            // store would fail the same way for every snapshot and is reported as what it is.
            Err(e @ (Error::Corrupt { .. } | Error::Unauthenticated { .. } | Error::NotFound { .. }))
                if snapshot_id.is_none() =>
            {
                pgrx::warning!("snapshot {} does not verify, trying an older one: {e}", snapshot.id);
            }
            Err(e) => raise(&e),
        }
    }
    let Some((snapshot, manifest, verified)) = chosen else {
        raise_with(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            &format!("no snapshot of {source} verifies"),
            "Every snapshot of this table failed its checksums (see the warnings above); restore from a base backup with point-in-time recovery instead.",
        )
    };
    notice(&format!("step 2/4: restoring {} into {}", snapshot.id, target.qualified()));
    let rows = load(&manifest, &snapshot, verified, &target);
    notice(&format!("step 3/4: validating {rows} restored rows against the manifest"));
    let record = restore_record(&target.qualified());
    let checks = validate(&repository, &record);
    if let Some(failed) = checks.iter().find(|c| !c.3) {
        raise_with(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            &format!(
                "the restored rows do not match snapshot {}: {} expected {}, found {}",
                snapshot.id, failed.0, failed.1, failed.2
            ),
            "Nothing was kept. Try an older snapshot with snapshot_id => '...', and report this as a backstop bug.",
        );
    }
    notice(&format!(
        "step 4/4: {} holds the {rows} rows of {source} as of {}; review one of the plans below and run it to bring them back",
        target.qualified(),
        manifest.taken_at
    ));
    let record = restore_record(&target.qualified());
    plan_rows(plans_for(&repository, &record))
}
