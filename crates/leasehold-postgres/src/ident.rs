//! SQL identifiers (schema, table, channel): validated, then quoted.

use leasehold::LockError;

/// A name that matches `^[A-Za-z_][A-Za-z0-9_]{0,62}$`, safe to quote into SQL.
///
/// The pattern keeps names below PostgreSQL's 63-byte limit (longer ones would be truncated
/// silently, and two names could collide) and rules out quotes, so quoting cannot be escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ident(String);

impl Ident {
    pub(crate) fn new(what: &str, name: &str) -> Result<Self, LockError> {
        let mut chars = name.chars();
        let valid = name.len() <= 63
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            let shown: String = name.chars().take(80).flat_map(char::escape_debug).collect();
            return Err(LockError::invalid_config(
                format!("postgres {what} name \"{shown}\""),
                "must match ^[A-Za-z_][A-Za-z0-9_]{0,62}$",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as written (for `pg_notify`, which takes the channel as a value).
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The name double-quoted, for SQL text.
    pub(crate) fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_rejected_with_a_message_naming_them() {
        for bad in [
            "",
            "1abc",
            "locks; DROP TABLE x",
            "a\"b",
            "a'b",
            "a b",
            "ä",
            "a-b",
            &"x".repeat(64),
        ] {
            let err = Ident::new("table", bad).unwrap_err();
            assert!(err.to_string().contains("postgres table name"), "{err}");
        }
        assert_eq!(
            Ident::new("table", &"x".repeat(63)).unwrap().quoted().len(),
            65
        );
        assert_eq!(
            Ident::new("table", "Lease_Table1").unwrap().quoted(),
            "\"Lease_Table1\""
        );
    }
}
