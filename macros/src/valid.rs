//! The naming rules the macros enforce at compile time, mirroring `keel::limits` and the
//! runtime checks on topics and stream ids, so a name that compiles is one Keel accepts.

/// Longest aggregate kind or event type name, in bytes (`keel::limits::MAX_NAME_BYTES`).
pub(crate) const MAX_NAME_BYTES: usize = 128;

/// Checks an event type name: 1 to 128 bytes of ASCII letters, digits and `- _ . :`.
pub(crate) fn event_type_name(name: &str) -> Result<(), String> {
    check(name, "event type name", "`-`, `_`, `.` and `:`", |c| {
        matches!(c, '-' | '_' | '.' | ':')
    })
}

/// Checks an aggregate kind: 1 to 128 bytes of ASCII letters, digits and `- _ .`.
pub(crate) fn aggregate_kind(kind: &str) -> Result<(), String> {
    check(kind, "aggregate kind", "`-`, `_` and `.`", |c| {
        matches!(c, '-' | '_' | '.')
    })
}

fn check(
    name: &str,
    what: &str,
    punctuation: &str,
    allowed: impl Fn(char) -> bool,
) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "the {what} is {} bytes long; the limit is {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || allowed(c)))
    {
        return Err(format!(
            "the {what} `{name}` contains {c:?}: only ASCII letters, digits, {punctuation} are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_names() {
        for ok in [
            "Deposited",
            "account.deposited",
            "v2:Opened-x_y",
            &"a".repeat(128),
        ] {
            assert_eq!(event_type_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "has space", "é", "a/b", &"a".repeat(129)] {
            assert!(event_type_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aggregate_kinds() {
        for ok in ["account", "bank.account", "a-b_c"] {
            assert_eq!(aggregate_kind(ok), Ok(()), "{ok}");
        }
        for bad in ["", "bank:account", "bank account", &"k".repeat(129)] {
            assert!(aggregate_kind(bad).is_err(), "{bad}");
        }
        let message = aggregate_kind("a b").expect_err("space");
        assert_eq!(
            message,
            "the aggregate kind `a b` contains ' ': only ASCII letters, digits, `-`, `_` and `.` are allowed"
        );
    }
}
