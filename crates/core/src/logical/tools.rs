//! PostgreSQL's own client programs, which logical backups run, and how they are run.
//!
//! - They are found next to the server's binaries and must be of the server's major version: an
//!   older pg_dump refuses a newer server, and a newer one writes archives an older pg_restore
//!   cannot read, so a mismatch is refused up front with the reason (and doctor reports it).
//! - They reach the server over its Unix socket, with the connection (host, port, role,
//!   database) in their environment, never on their command line, where `ps` shows it to every
//!   local user. Passwords are never handled here: the role is one `pg_hba.conf` lets the server's
//!   OS user reach over the socket (peer or trust), or one `~/.pgpass` of that user names.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The client programs of one PostgreSQL installation, checked to match the server's version.
#[derive(Debug, Clone)]
pub struct Tools {
    pub pg_dump: PathBuf,
    pub pg_dumpall: PathBuf,
    pub pg_restore: PathBuf,
    pub psql: PathBuf,
    /// `pg_dump --version`, e.g. "pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)".
    pub version: String,
}

impl Tools {
    /// Finds the programs in `bin_dir` and checks that `pg_dump` is of `server_major` (15, 16...).
    pub fn find(bin_dir: &Path, server_major: u32) -> Result<Tools> {
        Tools::find_matching(bin_dir, server_major, false)
    }

    /// Finds programs that can restore a dump `pg_dump` of `dump_major` wrote: that version or a
    /// newer one (pg_restore reads older archives; a dump moves forward across versions).
    pub fn find_for_restore(bin_dir: &Path, dump_major: u32) -> Result<Tools> {
        Tools::find_matching(bin_dir, dump_major, true)
    }

    fn find_matching(bin_dir: &Path, server_major: u32, newer_ok: bool) -> Result<Tools> {
        let program = |name: &str| -> Result<PathBuf> {
            let path = bin_dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::Job {
                    message: format!("{name} is not in {} (next to the server's own programs)", bin_dir.display()),
                    hint: format!(
                        "Install the PostgreSQL {server_major} client programs (on Debian: apt-get install postgresql-client-{server_major})."
                    ),
                })
            }
        };
        let pg_dump = program("pg_dump")?;
        let output = std::process::Command::new(&pg_dump).arg("--version").output().map_err(|e| Error::Job {
            message: format!("could not run {}: {e}", pg_dump.display()),
            hint: "Check that the server's OS user may run PostgreSQL's client programs.".into(),
        })?;
        let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
        match version_major(&version) {
            Some(major) if major == server_major || (newer_ok && major > server_major) => {}
            found => {
                let found = found.map(|m| m.to_string()).unwrap_or_else(|| format!("unknown (\"{version}\")"));
                return Err(Error::Job {
                    message: if newer_ok {
                        format!(
                            "the programs in {} are version {found} but the dump was written by pg_dump {server_major}: pg_restore reads only archives of its own or an older version",
                            bin_dir.display()
                        )
                    } else {
                        format!(
                            "{} is version {found} but the server is {server_major}: its dumps would not restore reliably",
                            pg_dump.display()
                        )
                    },
                    hint: if newer_ok {
                        format!("Use the PostgreSQL {server_major} (or newer) client programs (backstop logical restore --pg-bin DIR).")
                    } else {
                        format!("Install the PostgreSQL {server_major} client programs next to the server's.")
                    },
                });
            }
        }
        Ok(Tools {
            pg_dumpall: program("pg_dumpall")?,
            pg_restore: program("pg_restore")?,
            psql: program("psql")?,
            pg_dump,
            version,
        })
    }
}

pub use crate::pg_version::version_major;

/// How the client programs reach this server: its socket directory, port and a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConnection {
    pub socket_dir: String,
    pub port: u16,
    pub user: String,
}

impl LocalConnection {
    /// Sets the connection for one program and `database` in its environment (libpq reads
    /// PGHOST, PGPORT, PGUSER and PGDATABASE), dropping any the server's environment carried.
    pub fn apply(&self, command: &mut tokio::process::Command, database: &str) {
        for name in ["PGSERVICE", "PGSERVICEFILE", "PGHOSTADDR", "PGOPTIONS", "PGPASSWORD", "PGSSLMODE"] {
            command.env_remove(name);
        }
        command
            .env("PGHOST", &self.socket_dir)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", database)
            .env("PGAPPNAME", "backstop")
            .env("PGCONNECT_TIMEOUT", "30");
    }
}

/// How many archive entries a `pg_restore --list` printed (comment lines start with ';').
pub fn count_list_entries(listing: &str) -> u64 {
    listing.lines().filter(|line| !line.trim().is_empty() && !line.starts_with(';')).count() as u64
}

/// The script a `psql` session runs to pin the dump's snapshot and record what it holds: a
/// REPEATABLE READ, READ ONLY transaction whose snapshot is exported for `pg_dump --snapshot`,
/// every table's row count and every sequence's state in that same snapshot, then a marker. The
/// queries are generated from the catalog with `format('%I')`, never from outside input. Tables
/// that belong to an extension are left out (pg_dump does not dump their rows unless the
/// extension says so); partitioned tables are counted through their partitions.
pub const SNAPSHOT_SESSION: &str = r#"\set ON_ERROR_STOP 1
BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
SET LOCAL lock_timeout = '60s';
SELECT 'snapshot|' || pg_catalog.pg_export_snapshot();
SELECT pg_catalog.format('SELECT %L || pg_catalog.count(*) FROM %I.%I',
         'table|' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) || '|', n.nspname, c.relname)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND c.relpersistence <> 't'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e')
 ORDER BY 1 \gexec
SELECT pg_catalog.format('SELECT %L || last_value || ''|'' || is_called FROM %I.%I',
         'sequence|' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) || '|', n.nspname, c.relname)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'S' AND c.relpersistence <> 't'
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e')
 ORDER BY 1 \gexec
\echo backstop-counted
"#;

/// The marker [`SNAPSHOT_SESSION`] prints once everything is counted.
pub const SESSION_DONE: &str = "backstop-counted";

/// One line of [`SNAPSHOT_SESSION`]'s output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionLine {
    Snapshot(String),
    Table { table: String, rows: i64 },
    Sequence { sequence: String, last_value: i64, is_called: bool },
}

/// Reads one output line; names may hold '|', so the numbers are split off from the right.
pub fn parse_session_line(line: &str) -> Option<SessionLine> {
    if let Some(id) = line.strip_prefix("snapshot|") {
        let ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        return ok.then(|| SessionLine::Snapshot(id.to_string()));
    }
    if let Some(rest) = line.strip_prefix("table|") {
        let (table, rows) = rest.rsplit_once('|')?;
        return Some(SessionLine::Table { table: table.to_string(), rows: rows.parse().ok()? });
    }
    if let Some(rest) = line.strip_prefix("sequence|") {
        let (rest, called) = rest.rsplit_once('|')?;
        let (sequence, last) = rest.rsplit_once('|')?;
        // boolean || text prints true/false; psql's own boolean output is t/f.
        let is_called = match called {
            "t" | "true" => true,
            "f" | "false" => false,
            _ => return None,
        };
        return Some(SessionLine::Sequence {
            sequence: sequence.to_string(),
            last_value: last.parse().ok()?,
            is_called,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_programs_banner() {
        assert_eq!(version_major("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"), Some(15));
        assert_eq!(version_major("pg_dump (PostgreSQL) 17.2"), Some(17));
        assert_eq!(version_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(version_major("garbage"), None);
    }

    #[test]
    fn a_missing_or_mismatched_pg_dump_is_refused_with_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let error = Tools::find(empty.path(), 15).unwrap_err();
        assert!(error.to_string().contains("pg_dump is not in"), "{error}");
        assert!(error.hint().contains("postgresql-client-15"), "{}", error.hint());
        let debian = Path::new("/usr/lib/postgresql/15/bin");
        if debian.join("pg_dump").is_file() {
            let tools = Tools::find(debian, 15).unwrap();
            assert!(tools.version.contains("15."), "{}", tools.version);
            let error = Tools::find(debian, 16).unwrap_err().to_string();
            assert!(error.contains("is version 15 but the server is 16"), "{error}");
        }
    }

    #[test]
    fn session_lines_parse_even_with_bars_in_names() {
        assert_eq!(
            parse_session_line("snapshot|00000003-0000001B-1"),
            Some(SessionLine::Snapshot("00000003-0000001B-1".into()))
        );
        assert_eq!(
            parse_session_line("table|\"odd|name\".\"t\"|42"),
            Some(SessionLine::Table { table: "\"odd|name\".\"t\"".into(), rows: 42 })
        );
        assert_eq!(
            parse_session_line("sequence|public.orders_id_seq|1001|true"),
            Some(SessionLine::Sequence { sequence: "public.orders_id_seq".into(), last_value: 1001, is_called: true })
        );
        for bad in ["snapshot|x; DROP", "table|t|many", "sequence|s|1|maybe", "NOTICE: hi", ""] {
            assert_eq!(parse_session_line(bad), None, "{bad}");
        }
    }

    #[test]
    fn list_entries_skip_comments() {
        let listing = ";\n; Archive created at 2026-11-22\n;\n215; 1259 16385 TABLE public orders postgres\n3345; 0 16385 TABLE DATA public orders postgres\n\n";
        assert_eq!(count_list_entries(listing), 2);
    }
}
