//! Writing SQL safely: identifiers and literals quoted by PostgreSQL's own rules, and the
//! privilege sets each access level means.
//!
//! Catalog reads bind every value as a parameter. Utility statements (`CREATE ROLE`, `GRANT`,
//! `COMMENT ON`, ...) take no parameters in PostgreSQL, so the few values they carry — the
//! SCRAM verifier, the ownership comment, `VALID UNTIL`, database encoding and locale — are
//! written as literals through [`quote_literal`], and every name through [`quote_ident`].
//! Nothing user-written is ever placed in SQL text any other way.

use tusk_api::common::Access;

/// Quotes `name` as a PostgreSQL identifier: always in double quotes, with each `"` doubled,
/// so it is taken verbatim (case, spaces, `;`, `$$`, backslashes and all).
///
/// PostgreSQL identifiers cannot hold NUL and keep at most 63 bytes; callers check names with
/// [`check_identifier`] first, so a name is never silently truncated.
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Quotes `value` as a string literal the way PostgreSQL's `quote_literal` does: single quotes
/// doubled, and — when there is a backslash — an `E'...'` literal with backslashes doubled, so
/// the result means the same whatever `standard_conforming_strings` says.
pub fn quote_literal(value: &str) -> String {
    let escaped = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", escaped.replace('\\', "\\\\"))
    } else {
        format!("'{escaped}'")
    }
}

/// Why a name cannot be a PostgreSQL identifier as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentifierProblem {
    Empty,
    TooLong,
    ContainsNul,
}

impl std::fmt::Display for IdentifierProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdentifierProblem::Empty => "is empty",
            IdentifierProblem::TooLong => {
                "is longer than 63 bytes, which PostgreSQL would silently truncate"
            }
            IdentifierProblem::ContainsNul => "contains a NUL character",
        })
    }
}

/// Checks that `name` is kept verbatim by PostgreSQL: 1 to 63 bytes, no NUL.
pub fn check_identifier(name: &str) -> Result<(), IdentifierProblem> {
    if name.is_empty() {
        Err(IdentifierProblem::Empty)
    } else if name.len() > tusk_api::user::MAX_IDENTIFIER_BYTES {
        Err(IdentifierProblem::TooLong)
    } else if name.contains('\0') {
        Err(IdentifierProblem::ContainsNul)
    } else {
        Ok(())
    }
}

/// Privileges on the database itself for an access level (when the role does not own it).
pub fn database_privileges(access: Access) -> &'static [&'static str] {
    match access {
        Access::Owner => &["CONNECT", "CREATE", "TEMPORARY"],
        Access::ReadWrite | Access::ReadOnly => &["CONNECT"],
    }
}

/// Privileges on a schema for an access level. Owner access owns the schema instead.
pub fn schema_privileges(access: Access) -> &'static [&'static str] {
    match access {
        Access::Owner => &[],
        Access::ReadWrite | Access::ReadOnly => &["USAGE"],
    }
}

/// Privileges on tables (and views) in a granted schema, existing and future. Never `ALL`:
/// its meaning grows with PostgreSQL versions (17 added MAINTAIN), which would make the
/// observed set drift from the granted one.
pub fn table_privileges(access: Access) -> &'static [&'static str] {
    match access {
        Access::Owner => &[
            "DELETE",
            "INSERT",
            "REFERENCES",
            "SELECT",
            "TRIGGER",
            "TRUNCATE",
            "UPDATE",
        ],
        Access::ReadWrite => &["DELETE", "INSERT", "SELECT", "UPDATE"],
        Access::ReadOnly => &["SELECT"],
    }
}

/// Privileges on sequences in a granted schema, existing and future.
pub fn sequence_privileges(access: Access) -> &'static [&'static str] {
    match access {
        Access::Owner => &["SELECT", "UPDATE", "USAGE"],
        Access::ReadWrite => &["SELECT", "USAGE"],
        Access::ReadOnly => &["SELECT"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted_and_quotes_doubled() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("App-User"), "\"App-User\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("\""), "\"\"\"\"");
        assert_eq!(
            quote_ident("x\"; DROP ROLE postgres; --"),
            "\"x\"\"; DROP ROLE postgres; --\""
        );
        assert_eq!(quote_ident("$$"), "\"$$\"");
        assert_eq!(quote_ident("back\\slash"), "\"back\\slash\"");
        assert_eq!(quote_ident("ünï"), "\"ünï\"");
    }

    #[test]
    fn role_name_with_quote_is_quoted_not_injected() {
        // The quoted form holds exactly one identifier: between the outer quotes every `"`
        // is doubled, so no quote can end it early.
        for name in ["a\"b", "\"", "\"\"", "x\";--", "\"; DROP ROLE x; \""] {
            let quoted = quote_ident(name);
            let inner = &quoted[1..quoted.len() - 1];
            assert!(quoted.starts_with('"') && quoted.ends_with('"'));
            assert_eq!(inner.replace("\"\"", ""), name.replace('"', ""));
            assert_eq!(inner.matches('"').count(), 2 * name.matches('"').count());
        }
    }

    #[test]
    fn literals_double_quotes_and_escape_backslashes() {
        assert_eq!(quote_literal("abc"), "'abc'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
        assert_eq!(quote_literal("\\'"), "E'\\\\'''");
        assert_eq!(quote_literal(""), "''");
    }

    #[test]
    fn identifier_limits_are_bytes_and_nul() {
        assert_eq!(check_identifier(""), Err(IdentifierProblem::Empty));
        assert_eq!(check_identifier(&"a".repeat(63)), Ok(()));
        assert_eq!(
            check_identifier(&"a".repeat(64)),
            Err(IdentifierProblem::TooLong)
        );
        assert_eq!(
            check_identifier(&"é".repeat(32)),
            Err(IdentifierProblem::TooLong)
        );
        assert_eq!(check_identifier("a\0"), Err(IdentifierProblem::ContainsNul));
    }

    #[test]
    fn privilege_sets_are_sorted_and_never_all() {
        for access in [Access::Owner, Access::ReadWrite, Access::ReadOnly] {
            for set in [
                database_privileges(access),
                table_privileges(access),
                sequence_privileges(access),
            ] {
                let mut sorted = set.to_vec();
                sorted.sort_unstable();
                assert_eq!(sorted, set);
                assert!(!set.contains(&"ALL"));
            }
        }
    }
}
