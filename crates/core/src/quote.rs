//! Quoting names and values into SQL text, in one place for the extension, the CLI and the
//! drills: identifiers are always quoted (so no keyword or odd name changes the statement), and
//! literals assume standard_conforming_strings (on in every supported version). Where a value can
//! be a bind parameter it is one; these are for what SQL cannot bind (names, SET, DDL).

/// PostgreSQL's identifier quoting, applied always: "name" with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal; standard_conforming_strings is on in every supported version.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

pub fn qualified_name(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(quote_ident("Order Items"), "\"Order Items\"");
        assert_eq!(quote_ident("x\"; DROP TABLE t; --"), "\"x\"\"; DROP TABLE t; --\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(qualified_name("public", "t"), "\"public\".\"t\"");
    }
}
