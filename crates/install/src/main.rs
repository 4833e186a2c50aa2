//! `backstop-install`: puts a built backstop extension where PostgreSQL loads it from, doing what
//! `cargo pgrx install` does after its build, so that a first setup and the Debian package need no
//! cargo-pgrx (a release build of ~300 crates of its own, the longest step of a fresh setup).
//!
//! The four steps, in cargo-pgrx 0.18's order and with its renderer (`pgrx-sql-entity-graph`):
//! 1. `backstop.control` into `$(pg_config --sharedir)/extension`, `@CARGO_VERSION@` filled in;
//! 2. the shared library into `$(pg_config --pkglibdir)/backstop.so`;
//! 3. `backstop--<version>.sql`, rendered from the schema section (`.pgrxsc`) pgrx embeds in the
//!    library, with the control file as the extension root;
//! 4. every upgrade script `sql/backstop--A--B.sql`, `@CARGO_VERSION@` filled in.
//!
//! Invariants: every file is written under a temporary name in its destination directory, synced
//! and renamed over the old one, so a running server never maps a half-copied library and a failed
//! install leaves the previous one whole. The test suite (`scripts/test.sh`) checks that the SQL
//! written here is byte for byte what `cargo pgrx schema` renders.
//!
//! ```text
//! backstop-install --pg-config PATH --library target/debug/libbackstop.so [--root DIR]
//! ```
//! `--root` prefixes every destination (a package's staging tree). Run from the repository's top
//! directory (where `backstop.control` is).

mod elf;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use eyre::{bail, eyre, Result, WrapErr};
use pgrx_sql_entity_graph::section::decode_entities;
use pgrx_sql_entity_graph::{ControlFile, PgrxSql, SqlGraphEntity};

const EXTENSION: &str = "backstop";
const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Args {
    pg_config: PathBuf,
    library: PathBuf,
    root: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut pg_config = None;
    let mut library = None;
    let mut root = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().map(PathBuf::from).ok_or_else(|| eyre!("{arg:?} needs a value"));
        match arg.to_str() {
            Some("--pg-config") => pg_config = Some(value()?),
            Some("--library") => library = Some(value()?),
            Some("--root") => root = Some(value()?),
            _ => {
                bail!("unknown argument {arg:?}\nusage: backstop-install --pg-config PATH --library FILE [--root DIR]")
            }
        }
    }
    Ok(Args {
        pg_config: pg_config.ok_or_else(|| eyre!("--pg-config is required"))?,
        library: library.ok_or_else(|| eyre!("--library is required"))?,
        root,
    })
}

fn pg_config(pg_config: &Path, flag: &str) -> Result<PathBuf> {
    let output = Command::new(pg_config)
        .arg(flag)
        .output()
        .wrap_err_with(|| format!("could not run {}", pg_config.display()))?;
    if !output.status.success() {
        bail!("{} {flag} failed: {}", pg_config.display(), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

/// `dir` under `root` when one is given (`/usr/lib/...` becomes `ROOT/usr/lib/...`).
fn under(root: Option<&Path>, dir: PathBuf) -> PathBuf {
    match root {
        Some(root) => root.join(dir.strip_prefix("/").unwrap_or(&dir)),
        None => dir,
    }
}

/// Writes `bytes` to `dest` through a temporary file in the same directory: synced, then renamed.
fn publish(dest: &Path, bytes: &[u8], mode: u32, what: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = dest.parent().ok_or_else(|| eyre!("no directory to write {} into", dest.display()))?;
    fs::create_dir_all(dir).wrap_err_with(|| format!("could not create {}", dir.display()))?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or(EXTENSION);
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> Result<()> {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&temp, dest)?;
        fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.wrap_err_with(|| format!("could not write {}", dest.display()))?;
    println!("     Copying {what} to {}", dest.display());
    Ok(())
}

fn fill_version(text: &str) -> String {
    text.replace("@CARGO_VERSION@", VERSION)
}

/// The extension's SQL as cargo-pgrx renders it: the control file as root, then every entity
/// the library's schema section holds.
fn render_sql(control: &Path, library: &[u8]) -> Result<String> {
    let section = elf::section(library, pgrx_sql_entity_graph::section::ELF_SECTION_NAME)?.ok_or_else(|| {
        eyre!("the library has no pgrx schema section (.pgrxsc): was it built with pgrx 0.18 and not stripped?")
    })?;
    let entities = decode_entities(section).wrap_err("could not decode the pgrx schema section")?;
    println!("  Discovered {} SQL entities", entities.len());
    let root =
        ControlFile::from_path_with_cargo_version(control, VERSION).map_err(|e| eyre!("{}: {e}", control.display()))?;
    let all = std::iter::once(SqlGraphEntity::ExtensionRoot(root)).chain(entities);
    // module_pathname is set in the control file: the library is not versioned.
    PgrxSql::build(all, EXTENSION.to_string(), false).wrap_err("SQL generation error")?.to_sql()
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let root = args.root.as_deref();
    let extdir = under(root, pg_config(&args.pg_config, "--sharedir")?.join("extension"));
    let pkglibdir = under(root, pg_config(&args.pg_config, "--pkglibdir")?);
    let control = PathBuf::from(format!("{EXTENSION}.control"));
    if !control.is_file() {
        bail!("{} not found: run backstop-install from the repository's top directory", control.display());
    }
    let library = fs::read(&args.library).wrap_err_with(|| format!("could not read {}", args.library.display()))?;

    println!("  Installing {EXTENSION} {VERSION}");
    let control_text = fs::read_to_string(&control)?;
    publish(&extdir.join(&control), fill_version(&control_text).as_bytes(), 0o644, "control file")?;
    publish(&pkglibdir.join(format!("{EXTENSION}.so")), &library, 0o755, "shared library")?;
    let sql = render_sql(&control, &library)?;
    publish(&extdir.join(format!("{EXTENSION}--{VERSION}.sql")), sql.as_bytes(), 0o644, "SQL entities")?;
    let mut upgrades: Vec<_> = fs::read_dir("sql")
        .wrap_err("could not list sql/")?
        .filter_map(|entry| entry.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| is_upgrade_script(name))
        .collect();
    upgrades.sort();
    for name in upgrades {
        let text = fs::read_to_string(Path::new("sql").join(&name))?;
        publish(&extdir.join(&name), fill_version(&text).as_bytes(), 0o644, "extension schema upgrade file")?;
    }
    println!("    Finished installing {EXTENSION}");
    Ok(())
}

/// `backstop--A--B.sql`, as cargo-pgrx matches it (`^backstop--.+--.+\.sql$`).
fn is_upgrade_script(name: &str) -> bool {
    name.strip_prefix(&format!("{EXTENSION}--"))
        .and_then(|rest| rest.strip_suffix(".sql"))
        .and_then(|rest| rest.split_once("--"))
        .is_some_and(|(from, to)| !from.is_empty() && !to.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_the_extensions() {
        let root = include_str!("../../../Cargo.toml");
        let package = root.split("\n[").next().unwrap();
        let line = package.lines().find(|l| l.starts_with("version = ")).unwrap();
        assert_eq!(line, format!("version = \"{VERSION}\""), "crates/install's version must equal the extension's");
    }

    #[test]
    fn upgrade_scripts_are_recognised() {
        assert!(is_upgrade_script("backstop--0.1.0--0.2.0.sql"));
        assert!(!is_upgrade_script("backstop--0.2.0.sql"));
        assert!(!is_upgrade_script("backstop----0.2.0.sql"));
        assert!(!is_upgrade_script("other--0.1.0--0.2.0.sql"));
        assert!(!is_upgrade_script("backstop--0.1.0--0.2.0.sql.orig"));
    }

    #[test]
    fn destinations_move_under_the_root() {
        assert_eq!(under(Some(Path::new("/stage")), "/usr/lib/x".into()), PathBuf::from("/stage/usr/lib/x"));
        assert_eq!(under(None, "/usr/lib/x".into()), PathBuf::from("/usr/lib/x"));
    }
}
