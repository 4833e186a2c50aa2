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
