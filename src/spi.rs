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

/// Read-only [`Spi::get_one_with_args`]: the first column of the first row (None without a row).
/// Everything doctor() runs goes through these, so it answers on a standby too.
pub fn one<A: FromDatum + IntoDatum>(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<Option<A>, pgrx::spi::Error> {
    Spi::connect(|client| {
        let table = client.select(sql, Some(1), args)?;
        if table.is_empty() {
            return Ok(None);
        }
        table.first().get_one::<A>()
    })
}

/// Read-only [`Spi::get_two`]: the first two columns of the first row.
pub fn two<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
    sql: &str,
) -> Result<(Option<A>, Option<B>), pgrx::spi::Error> {
    Spi::connect(|client| {
        let table = client.select(sql, Some(1), &[])?;
        if table.is_empty() {
            return Ok((None, None));
        }
        table.first().get_two::<A, B>()
    })
}

/// Read-only [`Spi::get_three`]: the first three columns of the first row.
pub fn three<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum, C: FromDatum + IntoDatum>(
    sql: &str,
) -> Result<(Option<A>, Option<B>, Option<C>), pgrx::spi::Error> {
    Spi::connect(|client| {
        let table = client.select(sql, Some(1), &[])?;
        if table.is_empty() {
            return Ok((None, None, None));
        }
        table.first().get_three::<A, B, C>()
    })
}
