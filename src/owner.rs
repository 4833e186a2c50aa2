//! Writing backstop's own tables as their owner. Members of backstop_admin may read
//! `backstop.restores`, `schedules` and `job_runs`, never write them: rows there are written only
//! by backstop's functions, after their checks, so a validation gate, a schedule's owner or a run's
//! outcome cannot be forged with an INSERT or UPDATE.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::errors::raise_with;

/// Runs `f` with the current user switched to the owner of `table` (as a SECURITY DEFINER
/// function would), then switches back. An ERROR in `f` aborts the (sub)transaction, which
/// restores the user id itself.
pub fn as_owner_of<T>(table: &str, f: impl FnOnce() -> T) -> T {
    let owner = Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT relowner FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass($1)",
        &[table.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        raise_with(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            &format!("{table} is missing"),
            "Reinstall the extension (DROP EXTENSION backstop; CREATE EXTENSION backstop).",
        )
    });
    unsafe {
        let (mut user, mut context) = (pg_sys::Oid::INVALID, 0);
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(owner, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
        let result = f();
        pg_sys::SetUserIdAndSecContext(user, context);
        result
    }
}
