//! The private directory a drill's throwaway server lives in, and the authentication files that
//! let only this server's OS user reach it.
//!
//! Invariants:
//! - A drill directory is created fresh by this process: `backstop-drill-<job id>-<random>`,
//!   mode 0700, with `mkdir` that fails when anything (a directory, a file, a symlink another
//!   local user planted) holds the name; then another random name is tried. A name someone else
//!   created is never entered, reused or swept.
//! - The throwaway server's `pg_hba.conf` admits local (socket) connections by `peer` only,
//!   through an ident map naming exactly this OS user and the roles the drill uses: no `trust`,
//!   no password to leak, no TCP.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The prefix of every drill directory's name.
pub const PREFIX: &str = "backstop-drill-";

/// The ident map the throwaway server's `pg_hba.conf` names.
pub const IDENT_MAP: &str = "backstop_drill";

/// Creates a fresh private directory for job `job_id` under `base` (see the module's invariants).
pub fn create_private_dir(base: &Path, job_id: i64) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut last = None;
    for _ in 0..8 {
        let dir = base.join(format!("{PREFIX}{job_id}-{:016x}", rand::random::<u64>()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                // The umask could only have narrowed the mode; check what was made is ours.
                let meta = std::fs::symlink_metadata(&dir).map_err(|e| Error::io("inspect", &dir, e))?;
                if !is_private_dir_of(&meta, unsafe { libc::geteuid() }) {
                    return Err(Error::io(
                        "create (fresh, 0700)",
                        &dir,
                        std::io::Error::other("it is not a private directory of this user"),
                    ));
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(Error::io("create (fresh, 0700)", &dir, e)),
        }
    }
    Err(Error::io("create (fresh, 0700)", base, last.unwrap_or_else(|| std::io::Error::other("no free name"))))
}

/// The job id in a drill directory's name (`backstop-drill-<id>-<random>`, or the older
/// `backstop-drill-<id>`).
pub fn job_of(name: &str) -> Option<i64> {
    let rest = name.strip_prefix(PREFIX)?;
    let (id, random) = match rest.split_once('-') {
        Some((id, random)) => (id, Some(random)),
        None => (rest, None),
    };
    if random.is_some_and(|r| r.len() != 16 || !r.bytes().all(|b| b.is_ascii_hexdigit())) {
        return None;
    }
    id.parse().ok()
}

/// A directory (not a link) owned by `uid` that nobody else may enter.
pub fn is_private_dir_of(meta: &std::fs::Metadata, uid: u32) -> bool {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    meta.is_dir() && !meta.file_type().is_symlink() && meta.uid() == uid && meta.permissions().mode() & 0o077 == 0
}

/// `pg_hba.conf` and `pg_ident.conf` for a throwaway server: peer authentication over its
/// socket, `os_user` admitted as each of `roles` and as nothing else.
pub fn auth_files(os_user: &str, roles: &[&str]) -> (String, String) {
    let hba = format!("local all all peer map={IDENT_MAP}\n");
    let ident: String = roles.iter().map(|role| format!("{IDENT_MAP} {os_user} {role}\n")).collect();
    (hba, ident)
}

/// Writes a throwaway server's own `postgresql.conf` (empty: everything is on its command
/// line), `pg_hba.conf` and `pg_ident.conf` ([`auth_files`]) into its directory `dir`, and makes
/// its data directory `dir/data` private.
pub fn write_config_files(dir: &Path, os_user: &str, roles: &[&str]) -> Result<()> {
    let (hba, ident) = auth_files(os_user, roles);
    for (name, text) in [("postgresql.conf", String::new()), ("pg_hba.conf", hba), ("pg_ident.conf", ident)] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::io("write", &path, e))?;
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir.join("data"), std::fs::Permissions::from_mode(0o700));
    Ok(())
}

/// The command-line options of a throwaway server in `dir` (written by [`write_config_files`]):
/// only its own configuration files, a socket in `dir` and no TCP listener, nothing archived and
/// nothing preloaded; `extra` last. Options on the command line win over the backup's
/// `postgresql.auto.conf`.
pub fn server_options(dir: &Path, port: u16, extra: &str) -> String {
    format!(
        "-c config_file={dir}/postgresql.conf -c hba_file={dir}/pg_hba.conf -c ident_file={dir}/pg_ident.conf -c port={port} -c listen_addresses='' \
         -c unix_socket_directories={dir} -c archive_mode=off -c shared_preload_libraries='' -c session_preload_libraries='' \
         -c local_preload_libraries='' -c logging_collector=off -c log_destination=stderr {extra}",
        dir = dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_name_is_never_entered_and_each_drill_gets_a_fresh_private_directory() {
        let base = tempfile::tempdir().unwrap();
        // What another local user could plant under the old, predictable name.
        std::fs::create_dir(base.path().join("backstop-drill-7")).unwrap();
        std::os::unix::fs::symlink("/etc", base.path().join("backstop-drill-7-0000000000000000")).unwrap();
        let first = create_private_dir(base.path(), 7).unwrap();
        let second = create_private_dir(base.path(), 7).unwrap();
        assert_ne!(first, second);
        for dir in [&first, &second] {
            let meta = std::fs::symlink_metadata(dir).unwrap();
            assert!(is_private_dir_of(&meta, unsafe { libc::geteuid() }), "{}", dir.display());
            assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0, "fresh and empty");
            assert_eq!(job_of(&dir.file_name().unwrap().to_string_lossy()), Some(7));
        }
        // A link or a shared directory is not private, whoever owns it.
        let link = std::fs::symlink_metadata(base.path().join("backstop-drill-7-0000000000000000")).unwrap();
        assert!(!is_private_dir_of(&link, unsafe { libc::geteuid() }));
        let shared = base.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        assert!(!is_private_dir_of(&std::fs::metadata(&shared).unwrap(), unsafe { libc::geteuid() }));
    }

    #[test]
    fn drill_directory_names_carry_the_job_id() {
        assert_eq!(job_of("backstop-drill-12-00ff00ff00ff00ff"), Some(12));
        assert_eq!(job_of("backstop-drill-12"), Some(12));
        assert_eq!(job_of("backstop-drill-12-x"), None);
        assert_eq!(job_of("backstop-drill-x-00ff00ff00ff00ff"), None);
        assert_eq!(job_of("other"), None);
    }

    #[test]
    fn the_throwaway_server_admits_only_this_os_user_as_the_named_roles_by_peer() {
        let (hba, ident) = auth_files("postgres", &["postgres", "backstop_restorer"]);
        assert_eq!(hba, "local all all peer map=backstop_drill\n");
        assert!(!hba.contains("trust") && !hba.contains("host"));
        assert_eq!(ident, "backstop_drill postgres postgres\nbackstop_drill postgres backstop_restorer\n");
    }
}
