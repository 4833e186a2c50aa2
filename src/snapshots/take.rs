//! Taking a snapshot: the backend scans the table (one MVCC snapshot, an AccessShareLock held to
//! the end of the transaction) into Arrow batches; an I/O thread checksums, encodes and uploads
//! them as one Parquet object; the manifest, written last, commits it. The SQL function
//! `snapshot_table` and the `snapshot` job both call [`take`].

use std::time::Instant;

use backstop_core::snapshot::content::ContentDigest;
use backstop_core::snapshot::manifest::{DataObject, SnapshotManifest, MANIFEST_FORMAT_VERSION};
use backstop_core::snapshot::parquet_file::ParquetSink;
use backstop_core::snapshot::stored;
use backstop_core::snapshot::{self as layout, SnapshotId};
use backstop_core::store::WriteMode;
use backstop_core::{Error, Repository};
use pgrx::prelude::*;

use super::{catalog, megabytes, reader, PROGRESS_INTERVAL};
use crate::errors::{notice, raise_with, OrRaise};
use crate::{io, repo};

/// A snapshot taken and committed.
pub struct Taken {
    pub id: SnapshotId,
    pub rows: u64,
}

/// Takes one consistent snapshot of table `relid` as the current role (which must read every
/// row) and commits it with its manifest; raises on failure, publishing nothing.
pub fn take(relid: pg_sys::Oid) -> Taken {
    check_can_snapshot(relid);
    // Held to the end of the transaction: the definition read below stays the one the rows have.
    unsafe { pg_sys::LockRelationOid(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
    let described = catalog::describe(relid);
    let def = &described.def;
    let repository = repo::open_checked().or_raise();
    let id = SnapshotId::random();
    let started = Instant::now();
    let mut context = current_context();
    context.relation_file = crate::backups::relations::relation_files(Some(u32::from(relid)))
        .ok()
        .and_then(|files| files.first().map(|f| f.file()));
    notice(&format!("snapshot {id} of {}: reading rows into {}", def.qualified_name(), repository.describe()));

    let data_path = backstop_core::layout::snapshot_data(&def.schema, &def.name, &id);
    // The backend reads rows into Arrow batches; an I/O thread checksums, encodes and uploads them
    // meanwhile. A bounded channel keeps at most a few batches in flight.
    let (batches, receiver) = tokio::sync::mpsc::channel(2);
    let mut encoder = io::runtime().spawn_blocking({
        let (repository, table) = (repository.clone(), def.clone());
        move || encode_and_upload(&repository, &data_path, &table, receiver)
    });
    // pg_stat_progress_copy shows a snapshot as the COPY TO it is, with rows read so far.
    unsafe {
        pg_sys::pgstat_progress_start_command(pg_sys::ProgressCommandType::PROGRESS_COMMAND_COPY, relid);
        pg_sys::pgstat_progress_update_param(
            pg_sys::PROGRESS_COPY_COMMAND as i32,
            pg_sys::PROGRESS_COPY_COMMAND_TO as i64,
        );
        pg_sys::pgstat_progress_update_param(
            pg_sys::PROGRESS_COPY_TYPE as i32,
            pg_sys::PROGRESS_COPY_TYPE_CALLBACK as i64,
        );
    }
    let mut last_report = Instant::now();
    let mut read = 0u64;
    let rows = reader::scan(def, &described.type_oids, |batch| {
        read += batch.num_rows() as u64;
        unsafe { pg_sys::pgstat_progress_update_param(pg_sys::PROGRESS_COPY_TUPLES_PROCESSED as i32, read as i64) };
        if io::block_on(batches.send(Some(batch.clone()))).is_err() {
            // The encoder stopped early: its error says why.
            encoder_failed(io::block_on(&mut encoder));
        }
        if last_report.elapsed() >= PROGRESS_INTERVAL {
            last_report = Instant::now();
            notice(&format!("snapshot {id}: {read} rows read, {:.0} s", started.elapsed().as_secs_f64()));
        }
    });
    unsafe { pg_sys::pgstat_progress_end_command() };
    // `None` says every row was sent: without it the encoder aborts the upload and publishes nothing.
    let _ = io::block_on(batches.send(None));
    let encoded = match io::block_on(encoder) {
        Ok(Ok(encoded)) => encoded,
        failed => encoder_failed(failed),
    };
    let (digest, row_groups, trailer) = (encoded.digest, encoded.row_groups, encoded.trailer);
    if digest.rows() != rows {
        raise_with(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            &format!("{rows} rows were read but {} encoded", digest.rows()),
            "This is a bug in backstop; nothing was published.",
        );
    }

    let manifest = SnapshotManifest {
        format_version: MANIFEST_FORMAT_VERSION,
        snapshot_id: id.to_string(),
        table: def.clone(),
        rows,
        content_checksum: digest.checksum(),
        data: DataObject {
            path: layout::DATA_FILE.to_string(),
            sha256: trailer.plain_sha256_hex(),
            bytes: trailer.plain_len,
            stored_bytes: trailer.object_len(),
            row_groups,
        },
        lsn: context.lsn,
        taken_at: context.taken_at,
        taken_at_unix_ms: context.taken_at_unix_ms,
        database: context.database,
        postgres_version: context.version,
        pg_version_num: pg_sys::PG_VERSION_NUM,
        system_identifier: repo::system_identifier().to_string(),
        server_encoding: context.server_encoding,
        backstop_version: env!("CARGO_PKG_VERSION").to_string(),
        relation_file: context.relation_file,
        mvcc_snapshot: context.mvcc_snapshot,
        // The object's signature (the cluster's Ed25519 key) authenticates it; the HMAC of
        // backstop 0.2 is checked only when adopt_repository vouches for an older manifest.
        authentication: None,
    };
    io::block_on(stored::write_manifest(&repository, &manifest)).or_raise();
    notice(&format!(
        "snapshot {id} of {} complete: {rows} rows, {} stored in {:.1} s",
        def.qualified_name(),
        megabytes(trailer.object_len()),
        started.elapsed().as_secs_f64()
    ));
    Taken { id, rows }
}

fn encoder_failed(result: Result<Result<Encoded, Error>, tokio::task::JoinError>) -> ! {
    match result {
        Ok(Err(e)) => crate::errors::raise(&e),
        Ok(Ok(_)) => raise_with(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "the snapshot encoder finished early",
            "This is a bug in backstop.",
        ),
        Err(e) => raise_with(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            &format!("the snapshot encoder failed: {e}"),
            "This is a bug in backstop.",
        ),
    }
}

struct Encoded {
    digest: ContentDigest,
    row_groups: u64,
    trailer: backstop_core::codec::Trailer,
}

/// Runs on an I/O thread: checksums and encodes the batches as Parquet, streaming completed row
/// groups into the data object's upload. Publishes the object only after the final `None`.
fn encode_and_upload(
    repository: &Repository,
    data_path: &backstop_core::ObjectPath,
    table: &backstop_core::snapshot::TableDef,
    mut batches: tokio::sync::mpsc::Receiver<Option<arrow_array::RecordBatch>>,
) -> Result<Encoded, Error> {
    let runtime = tokio::runtime::Handle::current();
    let mut writer = runtime.block_on(repository.writer(data_path, WriteMode::CreateNew))?;
    let mut sink = ParquetSink::new(table)?;
    let mut digest = ContentDigest::default();
    loop {
        match batches.blocking_recv() {
            Some(Some(batch)) => {
                digest.add_batch(&batch)?;
                sink.write(&batch)?;
                let bytes = sink.take_output();
                if !bytes.is_empty() {
                    runtime.block_on(writer.write(&bytes))?;
                }
            }
            Some(None) => break,
            // The backend stopped sending (an error or a cancel): publish nothing.
            None => {
                runtime.block_on(writer.abort());
                return Err(Error::Cancelled);
            }
        }
    }
    let (rest, row_groups) = sink.finish()?;
    runtime.block_on(writer.write(&rest))?;
    let trailer = runtime.block_on(writer.finish())?.trailer();
    Ok(Encoded { digest, row_groups, trailer })
}

/// A snapshot must hold every row: the caller needs SELECT on the table, and row-level security
/// must not hide rows from them.
fn check_can_snapshot(relid: pg_sys::Oid) {
    let (can_select, rls_active, name) = Spi::connect(|client| {
        let row = client
            .select(
                "SELECT pg_catalog.has_table_privilege($1, 'SELECT'), pg_catalog.row_security_active($1), $1::regclass::text",
                Some(1),
                &[relid.into()],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>((row.get::<bool>(1)?.unwrap_or(false), row.get::<bool>(2)?.unwrap_or(false), row.get::<String>(3)?.unwrap_or_default()))
    })
    .unwrap_or_else(|e| raise_with(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, &e.to_string(), "This is a bug in backstop."));
    if !can_select {
        raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            &format!("permission denied: a snapshot of {name} needs SELECT on it"),
            &format!("Run it as a role with SELECT on the table (GRANT SELECT ON {name} TO ...)."),
        );
    }
    if rls_active {
        raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            &format!("row-level security hides rows of {name} from the current role; the snapshot would be incomplete"),
            "Run the snapshot as the table owner or a role with BYPASSRLS.",
        );
    }
}

struct SnapshotContext {
    lsn: String,
    taken_at: String,
    taken_at_unix_ms: i64,
    database: String,
    version: String,
    server_encoding: String,
    relation_file: Option<backstop_core::wal::records::RelFile>,
    mvcc_snapshot: Option<String>,
}

fn current_context() -> SnapshotContext {
    Spi::connect(|client| {
        let row = client
            .select(
                "WITH now AS (SELECT pg_catalog.clock_timestamp() AS at)
                 SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
                             ELSE pg_catalog.pg_current_wal_insert_lsn() END::text,
                        pg_catalog.to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                        (extract(epoch FROM at) * 1000)::int8,
                        pg_catalog.current_database()::text,
                        pg_catalog.version(),
                        pg_catalog.current_setting('server_encoding'),
                        pg_catalog.pg_current_snapshot()::text
                   FROM now",
                Some(1),
                &[],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>(SnapshotContext {
            lsn: row.get(1)?.unwrap_or_default(),
            taken_at: row.get(2)?.unwrap_or_default(),
            taken_at_unix_ms: row.get(3)?.unwrap_or_default(),
            database: row.get(4)?.unwrap_or_default(),
            version: row.get(5)?.unwrap_or_default(),
            server_encoding: row.get(6)?.unwrap_or_default(),
            relation_file: None,
            mvcc_snapshot: row.get(7)?,
        })
    })
    .unwrap_or_else(|e| {
        raise_with(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, &e.to_string(), "This is a bug in backstop.")
    })
}
