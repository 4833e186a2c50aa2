//! The SQL that brings restored rows back into the original table, one statement per strategy,
//! for the operator to review and run.

use super::manifest::TableDef;
use super::{qualified_name, quote_ident};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopybackPlan {
    pub strategy: &'static str,
    pub description: String,
    pub sql: String,
}

/// Plans for copying the rows of `restored` (schema, table) back into the table the snapshot was
/// taken of. `original_exists` is false when that table was dropped.
pub fn plans(table: &TableDef, restored: (&str, &str), original_exists: bool) -> Vec<CopybackPlan> {
    let source = qualified_name(restored.0, restored.1);
    let original = table.qualified_name();
    if !original_exists {
        let mut statements = Vec::new();
        if restored.0 != table.schema {
            statements.push(format!("ALTER TABLE {source} SET SCHEMA {};", quote_ident(&table.schema)));
        }
        let moved = qualified_name(&table.schema, restored.1);
        if restored.1 != table.name {
            statements.push(format!("ALTER TABLE {moved} RENAME TO {};", quote_ident(&table.name)));
        }
        let foreign_keys: Vec<String> = table
            .constraints
            .iter()
            .filter(|c| c.kind == "f")
            .map(|c| format!("ALTER TABLE {original} ADD CONSTRAINT {} {};", quote_ident(&c.name), c.definition))
            .collect();
        statements.extend(foreign_keys);
        statements.extend(table.indexes.iter().map(|index| format!("{index};")));
        return vec![CopybackPlan {
            strategy: "rename",
            description: format!(
                "{original} no longer exists: the restored table takes its place, with its indexes and foreign keys"
            ),
            sql: wrap(statements),
        }];
    }

    let loaded: Vec<String> = table.loaded_columns().map(|(_, c)| quote_ident(&c.name)).collect();
    let columns = loaded.join(", ");
    let overriding = if table.columns.iter().any(|c| c.identity.as_deref() == Some("ALWAYS") && c.generated.is_none()) {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let insert = format!("INSERT INTO {original} ({columns}){overriding}\nSELECT {columns} FROM {source}");
    // Deleting rows that other tables reference changes those tables too (ON DELETE CASCADE / SET
    // NULL / SET DEFAULT): say so, and offer a plan that deletes only rows the snapshot lacks.
    let propagating: Vec<String> = table
        .referenced_by
        .iter()
        .filter(|k| k.deletes_propagate())
        .map(|k| format!("{} ({} {})", k.table, quote_ident(&k.name), k.on_delete_sql()))
        .collect();
    let warning = if propagating.is_empty() {
        String::new()
    } else {
        format!(
            "; WARNING: other tables reference {original} and deleting its rows changes them too: {}{}",
            propagating.join(", "),
            if table.primary_key().is_some() {
                "; sync_by_key avoids that for every row the snapshot holds"
            } else {
                ""
            }
        )
    };
    let mut plans = vec![CopybackPlan {
        strategy: "replace_all",
        description: format!("every row of {original} is replaced by the restored rows{warning}"),
        sql: wrap(vec![
            format!("LOCK TABLE {original} IN ACCESS EXCLUSIVE MODE;"),
            format!("DELETE FROM {original};"),
            format!("{insert};"),
        ]),
    }];
    if let Some(key) = table.primary_key().filter(|k| !k.columns.is_empty()) {
        let key_columns: Vec<String> = key.columns.iter().map(|c| quote_ident(c)).collect();
        let conflict = format!("ON CONFLICT ({})", key_columns.join(", "));
        let updates: Vec<String> =
            loaded.iter().filter(|c| !key_columns.contains(c)).map(|c| format!("{c} = EXCLUDED.{c}")).collect();
        let action =
            if updates.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
        plans.push(CopybackPlan {
            strategy: "insert_missing",
            description: format!(
                "rows whose primary key is missing from {original} are inserted; existing rows are left alone"
            ),
            sql: wrap(vec![format!("{insert}\n{conflict} DO NOTHING;")]),
        });
        plans.push(CopybackPlan {
            strategy: "upsert",
            description:
                "missing rows are inserted and rows with the same primary key are overwritten with the restored values"
                    .to_string(),
            sql: wrap(vec![format!("{insert}\n{conflict} {action};")]),
        });
        if !propagating.is_empty() {
            let matches: Vec<String> = key_columns.iter().map(|c| format!("r.{c} = o.{c}")).collect();
            plans.push(CopybackPlan {
                strategy: "sync_by_key",
                description: format!(
                    "{original} ends up holding exactly the restored rows, like replace_all, but rows the snapshot \
                     holds are updated in place, so the rows referencing them are left alone; only rows absent \
                     from the snapshot are deleted, with their ON DELETE actions: {}",
                    propagating.join(", ")
                ),
                sql: wrap(vec![
                    format!("LOCK TABLE {original} IN SHARE ROW EXCLUSIVE MODE;"),
                    format!("{insert}\n{conflict} {action};"),
                    format!(
                        "DELETE FROM {original} o WHERE NOT EXISTS (SELECT 1 FROM {source} r WHERE {});",
                        matches.join(" AND ")
                    ),
                ]),
            });
        }
    }
    plans
}

fn wrap(statements: Vec<String>) -> String {
    format!("BEGIN;\n{}\nCOMMIT;", statements.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::manifest::tests::sample_table;

    #[test]
    fn existing_tables_get_three_strategies_over_loaded_columns() {
        let plans = plans(&sample_table(), ("public", "orders_recovered"), true);
        let strategies: Vec<&str> = plans.iter().map(|p| p.strategy).collect();
        assert_eq!(strategies, ["replace_all", "insert_missing", "upsert"]);
        let columns = "\"id\", \"Total \"\"gross\"\"\", \"name\"";
        assert!(
            plans[0].sql.contains(&format!(
                "INSERT INTO \"public\".\"orders\" ({columns})\nSELECT {columns} FROM \"public\".\"orders_recovered\";"
            )),
            "{}",
            plans[0].sql
        );
        assert!(plans[0]
            .sql
            .starts_with("BEGIN;\nLOCK TABLE \"public\".\"orders\" IN ACCESS EXCLUSIVE MODE;\nDELETE FROM"));
        assert!(!plans[0].sql.contains("doubled"), "generated columns are recomputed, never copied");
        assert!(plans[1].sql.contains("ON CONFLICT (\"id\") DO NOTHING;"), "{}", plans[1].sql);
        assert!(plans[2].sql.contains("ON CONFLICT (\"id\") DO UPDATE SET \"Total \"\"gross\"\"\" = EXCLUDED.\"Total \"\"gross\"\"\", \"name\" = EXCLUDED.\"name\";"), "{}", plans[2].sql);
    }

    #[test]
    fn a_dropped_table_is_replaced_by_renaming_the_restored_one() {
        let plans = plans(&sample_table(), ("recovery", "orders_recovered"), false);
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].strategy, "rename");
        assert_eq!(
            plans[0].sql,
            "BEGIN;\nALTER TABLE \"recovery\".\"orders_recovered\" SET SCHEMA \"public\";\n\
             ALTER TABLE \"public\".\"orders_recovered\" RENAME TO \"orders\";\n\
             CREATE INDEX orders_name ON public.orders USING btree (name);\nCOMMIT;"
        );
    }

    #[test]
    fn cascading_foreign_keys_are_named_and_a_plan_that_keeps_referencing_rows_is_offered() {
        use crate::snapshot::manifest::ReferencingKey;
        let mut table = sample_table();
        let quiet = plans(&table, ("public", "orders_recovered"), true);
        assert!(quiet.iter().all(|p| !p.description.contains("WARNING") && p.strategy != "sync_by_key"));
        table.referenced_by = vec![
            ReferencingKey {
                table: "\"public\".\"order_lines\"".into(),
                name: "lines_order".into(),
                on_delete: "c".into(),
            },
            ReferencingKey { table: "\"public\".\"invoices\"".into(), name: "inv_order".into(), on_delete: "a".into() },
        ];
        let plans = plans(&table, ("public", "orders_recovered"), true);
        let replace_all = &plans[0];
        assert!(replace_all.description.contains("WARNING"), "{}", replace_all.description);
        assert!(replace_all.description.contains("\"public\".\"order_lines\" (\"lines_order\" ON DELETE CASCADE)"));
        assert!(!replace_all.description.contains("invoices"), "NO ACTION makes a delete fail, it changes nothing");
        let sync = plans.iter().find(|p| p.strategy == "sync_by_key").expect("the cascade-free plan is offered");
        assert!(!sync.sql.contains("DELETE FROM \"public\".\"orders\";"), "{}", sync.sql);
        assert!(
            sync.sql.contains("DELETE FROM \"public\".\"orders\" o WHERE NOT EXISTS (SELECT 1 FROM \"public\".\"orders_recovered\" r WHERE r.\"id\" = o.\"id\");"),
            "{}",
            sync.sql
        );
        assert!(sync.sql.contains("ON CONFLICT (\"id\") DO UPDATE SET"), "{}", sync.sql);
    }

    #[test]
    fn tables_without_a_primary_key_only_get_replace_all() {
        let mut table = sample_table();
        table.constraints.retain(|c| c.kind != "p");
        let strategies: Vec<&str> = plans(&table, ("public", "r"), true).iter().map(|p| p.strategy).collect();
        assert_eq!(strategies, ["replace_all"]);
    }
}
