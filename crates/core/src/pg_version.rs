//! PostgreSQL versions as its programs print them, below every feature that runs them (logical
//! backups' client programs, a restore's server programs).

/// The major version in a `--version` line ("pg_dump (PostgreSQL) 15.20 (Debian ...)" is 15,
/// "pg_dump (PostgreSQL) 9.6.24" is 9).
pub fn version_major(line: &str) -> Option<u32> {
    let number = line.split_whitespace().find(|word| word.starts_with(|c: char| c.is_ascii_digit()))?;
    number.split('.').next()?.parse().ok()
}
