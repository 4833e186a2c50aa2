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

/// Runs `f` as the owner of backstop's tables, the way PostgreSQL runs index functions for their
/// owner: a local user-id change in a security-restricted operation, with `search_path` set to
/// `pg_catalog, pg_temp` for the duration (so no object of the caller's can stand in for one the
/// queries name). For doctor(): its fixed, read-only queries see the whole job history (which row
/// security hides partly from a plain backstop_admin member) and return only facts that name no
/// table or row count.
pub fn as_extension_owner<R>(f: impl FnOnce() -> R) -> R {
    // Read-only SPI: doctor() answers on a standby too.
    let owner = text(
        "SELECT relowner::pg_catalog.text FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass('backstop.job_runs')",
        &[],
    )
    .and_then(|o| o.parse::<u32>().ok())
    .map(pg_sys::Oid::from);
    let Some(owner) = owner else { return f() };
    struct Restore {
        user: pg_sys::Oid,
        context: i32,
        nest: i32,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            // On an error the transaction's abort restores both as well; undoing here keeps the
            // caller's settings whichever way this scope ends.
            unsafe {
                pg_sys::AtEOXact_GUC(!std::thread::panicking(), self.nest);
                pg_sys::SetUserIdAndSecContext(self.user, self.context);
            }
        }
    }
    let restore = unsafe {
        let (mut user, mut context) = (pg_sys::InvalidOid, 0);
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        let nest = pg_sys::NewGUCNestLevel();
        pg_sys::SetUserIdAndSecContext(
            owner,
            context | (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION) as i32,
        );
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        Restore { user, context, nest }
    };
    let result = f();
    drop(restore);
    result
}
