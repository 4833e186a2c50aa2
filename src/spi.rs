//! Small SPI helpers shared by the job and scheduler code.

use pgrx::prelude::*;

/// The first column of every row `sql` returns, as text (NULLs skipped).
pub fn texts(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Result<Vec<String>, pgrx::spi::Error> {
    Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(sql, None, args)? {
            if let Some(text) = row.get::<String>(1)? {
                out.push(text);
            }
        }
        Ok(out)
    })
}

/// The first column of the first row, as text: read-only SPI (pgrx's `Spi::get_one` marks the
/// transaction as writing, which takes a transaction id and fails on a standby).
pub fn text(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Option<String> {
    texts(sql, args).ok().and_then(|rows| rows.into_iter().next())
}
