//! Volume names: the only part of a path a client controls.

use crate::error::StoreError;

/// The default for [`StoreConfig::max_name_len`](crate::StoreConfig::max_name_len).
pub const DEFAULT_MAX_NAME_LEN: usize = 128;

/// The largest `max_name_len` a store accepts: the longest file the store makes from a name
/// (the temporary file of a commit record, `.<name>.commit.<16 hex digits>.tmp`) must still
/// fit the 255-byte file name limit of Linux file systems.
pub const MAX_NAME_LEN_LIMIT: usize = 255 - ".commit".len() - ".0123456789abcdef.tmp".len() - 1;

/// Checks that `name` can be a volume name, with a length limit of `max_len` bytes.
///
/// A volume name becomes a file name in three directories, so the rules keep it a single,
/// visible, portable path component:
///
/// - not empty, and at most `max_len` bytes;
/// - only ASCII letters, digits, `.`, `_` and `-` (no `/`, so no path traversal, and nothing a
///   shell or a log line would mangle);
/// - not starting with `.`: that rules out `.` and `..`, hidden files, and keeps every name
///   apart from the store's own temporary files, which all start with `.`.
///
/// The error names the first rule that broke.
pub fn validate_name(name: &str, max_len: usize) -> Result<(), StoreError> {
    let invalid = |reason: String| {
        Err(StoreError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("the name is empty".into());
    }
    if name.len() > max_len {
        return invalid(format!(
            "the name is {} bytes long; the limit is {max_len}",
            name.len()
        ));
    }
    if name.contains('/') {
        return invalid("'/' is not allowed: a name is a single path component".into());
    }
    if name.starts_with('.') {
        return invalid("a name must not start with '.' (no hidden files, '.' or '..')".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return invalid(format!(
            "character {bad:?} is not allowed; use only A-Z, a-z, 0-9, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> Option<String> {
        match validate_name(name, DEFAULT_MAX_NAME_LEN) {
            Ok(()) => None,
            Err(StoreError::InvalidName { reason, .. }) => Some(reason),
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn validation_table() {
        let long_ok = "a".repeat(DEFAULT_MAX_NAME_LEN);
        let too_long = "a".repeat(DEFAULT_MAX_NAME_LEN + 1);
        let table: &[(&str, Option<&str>)] = &[
            ("disk0", None),
            ("vm-01_root.qcow2", None),
            ("A.b-C_d", None),
            ("x", None),
            ("0", None),
            ("a..b", None),
            ("trailing.", None),
            ("-dash-first", None),
            (&long_ok, None),
            ("", Some("empty")),
            (&too_long, Some("129 bytes long; the limit is 128")),
            ("../x", Some("'/'")),
            ("a/b", Some("'/'")),
            ("/abs", Some("'/'")),
            ("..", Some("start with '.'")),
            (".", Some("start with '.'")),
            (".hidden", Some("start with '.'")),
            ("a b", Some("' '")),
            ("tab\there", Some("'\\t'")),
            ("nul\0", Some("'\\0'")),
            ("back\\slash", Some("'\\\\'")),
            ("émoji", Some("'é'")),
            ("colon:x", Some("':'")),
        ];
        for (name, expected) in table {
            let got = reason(name);
            match (expected, &got) {
                (None, None) => {}
                (Some(fragment), Some(reason)) => assert!(
                    reason.contains(fragment),
                    "{name:?}: reason {reason:?} does not mention {fragment:?}"
                ),
                _ => panic!("{name:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn custom_limit() {
        assert!(validate_name("abcd", 4).is_ok());
        assert!(validate_name("abcde", 4).is_err());
    }

    #[test]
    fn error_message_names_the_volume_and_truncates_long_names() {
        let err = validate_name("a/b", 128).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid volume name \"a/b\": '/' is not allowed: a name is a single path component"
        );
        let huge = "x".repeat(10_000);
        let message = validate_name(&huge, 128).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
        assert!(message.contains("(10000 bytes)"), "{message}");
    }
}
