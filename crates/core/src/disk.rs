//! Free space, checked before spooling: a restore that would fill the disk is refused up front with
//! a clear error, instead of failing half-way (or being mistaken for a damaged snapshot).

use std::path::Path;

use crate::error::{Error, Result};

/// Kept free beyond what a spool needs: a tenth of it, at least 64 MiB, so the server's own WAL
/// and temporary files still fit while the spool is written.
pub fn margin(bytes: u64) -> u64 {
    (bytes / 10).max(64 << 20)
}

/// Bytes an unprivileged process may still write in the file system holding `path`.
pub fn available_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidInput(format!("{} contains a NUL byte", path.display())))?;
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) } != 0 {
        return Err(Error::io("check free space in", path, std::io::Error::last_os_error()));
    }
    Ok(stats.f_bavail as u64 * stats.f_frsize as u64)
}

/// Refuses to write `bytes` into `path`'s file system unless they fit with the [`margin`] to spare.
pub fn check_room(path: &Path, bytes: u64) -> Result<()> {
    check_room_in(path, bytes, available_bytes(path)?)
}

fn check_room_in(path: &Path, bytes: u64, available: u64) -> Result<()> {
    let needed = bytes.saturating_add(margin(bytes));
    if needed > available {
        return Err(Error::NoSpace { path: path.to_path_buf(), needed, available });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_must_fit_with_a_margin_to_spare() {
        let dir = Path::new("/spool");
        check_room_in(dir, 1 << 30, (1 << 30) + (1 << 27)).unwrap();
        let error = check_room_in(dir, 1 << 30, (1 << 30) + (1 << 20)).unwrap_err();
        assert!(matches!(error, Error::NoSpace { .. }), "{error}");
        assert!(error.to_string().contains("/spool") && error.to_string().contains("available"), "{error}");
        // Small objects still leave 64 MiB free.
        assert!(check_room_in(dir, 1000, 32 << 20).is_err());
        let here = available_bytes(Path::new("/tmp")).unwrap();
        assert!(here > 0);
        assert!(check_room(Path::new("/tmp"), u64::MAX / 4).is_err());
    }
}
