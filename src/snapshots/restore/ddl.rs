//! Restore DDL rebuilt from validated parts (design rule 8: the repository is untrusted input).
//!
//! Even an authenticated manifest is not pasted into SQL as given. Before anything runs:
//! - type names go through `to_regtype` and are re-rendered by `format_type` with the recorded typmod;
//! - collations go through `to_regcollation` and are re-rendered quoted; identifiers are always quoted;
//! - every default, generated and policy expression must parse as exactly one expression;
//! - every statement generated from the parts must parse as exactly one statement of the expected
//!   kind (one `CREATE TABLE`, one `ALTER TABLE ... ADD CONSTRAINT`, one `CREATE INDEX`, ...).
//!
//! All of it runs with `search_path = pg_catalog`, the path the manifest's definitions were
//! captured under, so a look-alike function or type earlier in the restorer's path is never used.

use std::ffi::CString;

use backstop_core::snapshot::manifest::{AccessDef, SnapshotManifest, TableDef};
use backstop_core::snapshot::{qualified_name, quote_ident};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::errors::raise_with;

/// The kinds of statement restores and copy-back plans are built of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement {
    CreateTable,
    AddConstraint,
    CreateIndex,
    CreatePolicy,
}

fn caught_message(caught: &CaughtError) -> String {
    match caught {
        CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => report.message().to_string(),
        CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
    }
}

/// Parses `sql` with PostgreSQL's raw parser (nothing is looked up or run) and hands the statement
/// list to `check`; a syntax error is a refusal, not an ERROR of its own.
fn parsed(sql: &str, check: impl FnOnce(*mut pg_sys::List) -> Result<(), String>) -> Result<(), String> {
    parsed_as(sql, pg_sys::RawParseMode::RAW_PARSE_DEFAULT, check)
}

fn parsed_as(
    sql: &str,
    mode: pg_sys::RawParseMode::Type,
    check: impl FnOnce(*mut pg_sys::List) -> Result<(), String>,
) -> Result<(), String> {
    let text = CString::new(sql).map_err(|_| "it contains a NUL byte".to_string())?;
    // Only the parser runs inside the try block: it allocates in the current memory context and
    // holds no other resource, so an error it raises can be caught here without a subtransaction.
    let list = PgTryBuilder::new(|| Ok(unsafe { pg_sys::raw_parser(text.as_ptr(), mode) }))
        .catch_others(|caught| Err(caught_message(&caught)))
        .execute()?;
    check(list)
}

unsafe fn only_statement(list: *mut pg_sys::List) -> Result<*mut pg_sys::Node, String> {
    let count = if list.is_null() { 0 } else { (*list).length };
    if count != 1 {
        return Err(format!("it holds {count} statements, not one"));
    }
    let raw = pg_sys::list_nth(list, 0) as *mut pg_sys::RawStmt;
    Ok((*raw).stmt)
}

fn list_len(list: *mut pg_sys::List) -> i32 {
    if list.is_null() {
        0
    } else {
        unsafe { (*list).length }
    }
}

/// Checks that `text` is exactly one SQL expression: `SELECT (<text>)` must parse as one SELECT
/// with one unnamed target and no other clause, so no statement list, FROM or alias can hide in it.
pub fn check_expression(text: &str) -> Result<(), String> {
    parsed(&format!("SELECT ({text})"), |list| unsafe {
        let node = only_statement(list)?;
        if (*node).type_ != pg_sys::NodeTag::T_SelectStmt {
            return Err("it is not an expression".into());
        }
        let select = node as *mut pg_sys::SelectStmt;
        let s = &*select;
        let clean = s.op == pg_sys::SetOperation::SETOP_NONE
            && list_len(s.targetList) == 1
            && s.fromClause.is_null()
            && s.whereClause.is_null()
            && s.groupClause.is_null()
            && s.havingClause.is_null()
            && s.windowClause.is_null()
            && s.valuesLists.is_null()
            && s.sortClause.is_null()
            && s.limitOffset.is_null()
            && s.limitCount.is_null()
            && s.lockingClause.is_null()
            && s.withClause.is_null()
            && s.distinctClause.is_null()
            && s.intoClause.is_null();
        if !clean {
            return Err("it is more than one expression".into());
        }
        let target = pg_sys::list_nth(s.targetList, 0) as *mut pg_sys::ResTarget;
        if !(*target).name.is_null() {
            return Err("it is more than one expression".into());
        }
        Ok(())
    })
}

/// Checks that `text` is exactly one type name (with its typmod and array bounds, nothing else).
pub fn check_type_name(text: &str) -> Result<(), String> {
    parsed_as(text, pg_sys::RawParseMode::RAW_PARSE_TYPE_NAME, |list| {
        if list_len(list) == 1 {
            Ok(())
        } else {
            Err("it is not a type name".into())
        }
    })
}

/// Checks that `sql` is exactly one statement of `kind`.
pub fn check_statement(sql: &str, kind: Statement) -> Result<(), String> {
    parsed(sql, |list| unsafe {
        let node = only_statement(list)?;
        let tag = (*node).type_;
        let ok = match kind {
            Statement::CreateTable => tag == pg_sys::NodeTag::T_CreateStmt,
            Statement::CreateIndex => tag == pg_sys::NodeTag::T_IndexStmt,
            Statement::CreatePolicy => tag == pg_sys::NodeTag::T_CreatePolicyStmt,
            Statement::AddConstraint => {
                tag == pg_sys::NodeTag::T_AlterTableStmt && {
                    let cmds = (*(node as *mut pg_sys::AlterTableStmt)).cmds;
                    list_len(cmds) == 1
                        && (*(pg_sys::list_nth(cmds, 0) as *mut pg_sys::AlterTableCmd)).subtype
                            == pg_sys::AlterTableType::AT_AddConstraint
                }
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!("it is not a single {kind:?} statement"))
        }
    })
}

/// Refuses a manifest part: nothing has run yet.
pub fn refuse(manifest: &SnapshotManifest, what: &str, text: &str, reason: &str) -> ! {
    raise_with(
        PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
        &format!(
            "the manifest of snapshot {} holds {what} that backstop will not run ({reason}): {}",
            manifest.snapshot_id,
            text.chars().take(200).collect::<String>()
        ),
        "Nothing was run. The repository may have been tampered with: restore from another snapshot and find out who can write to the repository.",
    )
}

/// Runs `f` with `search_path = pg_catalog`, as a function's `SET search_path` clause does: the
/// caller's setting is back when `f` returns, and an error rolls it back with the transaction.
pub fn with_catalog_search_path<T>(f: impl FnOnce() -> T) -> T {
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        let result = f();
        pg_sys::AtEOXact_GUC(true, level);
        result
    }
}

fn spi_text(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Option<String> {
    Spi::get_one_with_args::<String>(sql, args).unwrap_or_else(|e| {
        raise_with(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, &e.to_string(), "This is a bug in backstop.")
    })
}

/// A copy of the manifest's table with every part validated and re-rendered by this server.
/// Call under [`with_catalog_search_path`].
pub fn validated_table(manifest: &SnapshotManifest) -> TableDef {
    let mut table = manifest.table.clone();
    for column in table.columns.iter_mut() {
        let what = format!("the type of column {}", quote_ident(&column.name));
        check_type_name(&column.type_name).unwrap_or_else(|reason| refuse(manifest, &what, &column.type_name, &reason));
        let rendered = spi_text(
            "SELECT pg_catalog.format_type(pg_catalog.to_regtype($1), $2)",
            &[column.type_name.clone().into(), column.typmod.into()],
        );
        column.type_name = rendered.unwrap_or_else(|| refuse(manifest, &what, &column.type_name, "no such type"));
        if let Some(collation) = &column.collation {
            let what = format!("the collation of column {}", quote_ident(&column.name));
            let rendered = spi_text(
                "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.collname)
                   FROM pg_catalog.pg_collation c JOIN pg_catalog.pg_namespace n ON n.oid = c.collnamespace
                  WHERE c.oid = pg_catalog.to_regcollation($1)",
                &[collation.clone().into()],
            );
            column.collation =
                Some(rendered.unwrap_or_else(|| refuse(manifest, &what, collation, "no such collation")));
        }
        if let Some(identity) = &column.identity {
            if identity != "ALWAYS" && identity != "BY DEFAULT" {
                refuse(manifest, "an identity kind", identity, "not ALWAYS or BY DEFAULT");
            }
        }
        for (what, expression) in [("a default", &column.default), ("a generated column expression", &column.generated)]
        {
            if let Some(text) = expression {
                check_expression(text).unwrap_or_else(|reason| refuse(manifest, what, text, &reason));
            }
        }
    }
    for constraint in &table.constraints {
        if !["p", "u", "c", "x", "f"].contains(&constraint.kind.as_str()) {
            refuse(manifest, "a constraint kind", &constraint.kind, "unknown");
        }
    }
    for index in &table.indexes {
        check_statement(index, Statement::CreateIndex)
            .unwrap_or_else(|reason| refuse(manifest, "an index definition", index, &reason));
    }
    validate_access(manifest, &table.access);
    table
}

const PRIVILEGES: [&str; 7] = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"];
const POLICY_COMMANDS: [&str; 5] = ["ALL", "SELECT", "INSERT", "UPDATE", "DELETE"];

fn validate_access(manifest: &SnapshotManifest, access: &AccessDef) {
    for grant in &access.grants {
        if !PRIVILEGES.contains(&grant.privilege.as_str()) {
            refuse(manifest, "a privilege", &grant.privilege, "unknown");
        }
    }
    for policy in &access.policies {
        if !POLICY_COMMANDS.contains(&policy.command.as_str()) {
            refuse(manifest, "a policy command", &policy.command, "unknown");
        }
        for text in [&policy.using, &policy.with_check].into_iter().flatten() {
            check_expression(text).unwrap_or_else(|reason| refuse(manifest, "a policy expression", text, &reason));
        }
    }
}

/// Checks each generated statement before it runs.
pub fn checked(manifest: &SnapshotManifest, sql: String, kind: Statement) -> String {
    check_statement(&sql, kind).unwrap_or_else(|reason| refuse(manifest, "a definition", &sql, &reason));
    sql
}

fn role_exists(role: &str) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)",
        &[role.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// `CREATE POLICY` statements that give a restored copy the original's row-level security. Roles
/// that no longer exist are left out; a policy none of whose roles exist is skipped (a permissive
/// one would grant nothing, a restrictive one restricted nobody who is left).
pub fn policy_sql(table: &TableDef, target: &str) -> Vec<String> {
    table
        .access
        .policies
        .iter()
        .filter_map(|p| {
            let existing: Vec<String> = p.roles.iter().filter(|r| role_exists(r)).map(|r| quote_ident(r)).collect();
            let roles = match (p.roles.is_empty(), existing.is_empty()) {
                (true, _) => "PUBLIC".to_string(),
                (false, true) => return None,
                (false, false) => existing.join(", "),
            };
            let mut sql = format!(
                "CREATE POLICY {} ON {target} AS {} FOR {} TO {roles}",
                quote_ident(&p.name),
                if p.permissive { "PERMISSIVE" } else { "RESTRICTIVE" },
                p.command
            );
            if let Some(using) = &p.using {
                sql.push_str(&format!(" USING ({using})"));
            }
            if let Some(check) = &p.with_check {
                sql.push_str(&format!(" WITH CHECK ({check})"));
            }
            Some(sql)
        })
        .collect()
}

/// The owner, grants and row-level security switches of the original, for a restored copy.
/// Roles that no longer exist are skipped (their grants would fail, and grant nothing).
pub fn access_sql(table: &TableDef, schema: &str, name: &str) -> Vec<String> {
    let target = qualified_name(schema, name);
    let access = &table.access;
    let mut statements = vec![format!("REVOKE ALL ON {target} FROM PUBLIC")];
    for grant in &access.grants {
        let grantee = match &grant.grantee {
            None => "PUBLIC".to_string(),
            Some(role) if role_exists(role) => quote_ident(role),
            Some(_) => continue,
        };
        let option = if grant.grantable { " WITH GRANT OPTION" } else { "" };
        statements.push(format!("GRANT {} ON {target} TO {grantee}{option}", grant.privilege));
    }
    if access.row_security {
        statements.push(format!("ALTER TABLE {target} ENABLE ROW LEVEL SECURITY"));
    }
    if access.force_row_security {
        statements.push(format!("ALTER TABLE {target} FORCE ROW LEVEL SECURITY"));
    }
    statements
}
