//! Checks of the `bank` binary's arguments, at the edge: amounts, account ids and command ids.
//!
//! A refused value is named in the error, but cut to [`SHOWN_BYTES`]: an argument of 128 KiB
//! is not echoed back whole. (clap's own "invalid value '…'" message repeats the whole value,
//! so these parsers build their errors themselves.)

use std::ffi::OsStr;

use bank::Account;
use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use keel::{Aggregate as _, CommandId, StreamId};

/// The most bytes of a refused value an error repeats.
pub(crate) const SHOWN_BYTES: usize = 64;

/// `text` quoted, cut to [`SHOWN_BYTES`] with its full length said: `"xxxx…" (131072 bytes)`.
pub(crate) fn shown(text: &str) -> String {
    match prefix(text) {
        None => format!("{text:?}"),
        Some(prefix) => format!("{:?} ({} bytes)", format!("{prefix}…"), text.len()),
    }
}

/// `text` as is, or cut to [`SHOWN_BYTES`] with its full length said: `xxxx… (131072 bytes)`.
pub(crate) fn cut(text: &str) -> String {
    match prefix(text) {
        None => text.to_owned(),
        Some(prefix) => format!("{prefix}… ({} bytes)", text.len()),
    }
}

/// The first [`SHOWN_BYTES`] (or fewer, at a character boundary) of a longer `text`.
fn prefix(text: &str) -> Option<&str> {
    if text.len() <= SHOWN_BYTES {
        return None;
    }
    let end = (0..=SHOWN_BYTES)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text.get(..end)
}

/// A clap value parser from a function whose error message names the value (cut).
#[derive(Clone, Copy)]
pub(crate) struct Checked<T>(pub(crate) fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Checked<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let name = arg.map_or_else(|| "the argument".to_owned(), |a| format!("'{a}'"));
        let refuse = |message: String| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid value for {name}: {message}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| refuse("not valid UTF-8".to_owned()))?;
        (self.0)(text).map_err(refuse)
    }
}

/// An amount: a whole number from 1 to [`bank::MAX_AMOUNT`].
pub(crate) fn amount(text: &str) -> Result<u64, String> {
    let refuse = || {
        format!(
            "amount must be a positive whole number, got {}",
            shown(text)
        )
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse());
    }
    match text.parse::<u64>() {
        Ok(0) => Err(refuse()),
        Ok(amount) if amount <= bank::MAX_AMOUNT => Ok(amount),
        Ok(_) | Err(_) => Err(format!(
            "amount {} is too large; the most is {}",
            shown(text),
            bank::MAX_AMOUNT
        )),
    }
}

/// An account id: a valid stream id.
pub(crate) fn account(text: &str) -> Result<String, String> {
    StreamId::new(Account::KIND, text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("not a valid account id: {e}"))
}

/// A command id.
pub(crate) fn command_id(text: &str) -> Result<CommandId, String> {
    CommandId::new(text).map_err(|e| format!("not a valid command id: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_whole_numbers_from_1_to_the_largest_balance() {
        assert_eq!(amount("1"), Ok(1));
        assert_eq!(amount("9223372036854775807"), Ok(bank::MAX_AMOUNT));
        for refused in ["0", "-5", "abc", "+5", " 5", "1.5", "", "1e3"] {
            let message = amount(refused).expect_err(refused);
            assert_eq!(
                message,
                format!("amount must be a positive whole number, got {refused:?}")
            );
        }
        for too_large in ["9223372036854775808", "99999999999999999999999"] {
            let message = amount(too_large).expect_err(too_large);
            assert!(message.contains("too large"), "{message}");
        }
    }

    #[test]
    fn a_long_value_is_cut_in_messages() {
        let long = "é".repeat(100_000);
        let message = amount(&long).expect_err("not a number");
        assert!(message.len() < 200, "{message}");
        assert!(message.ends_with("(200000 bytes)"), "{message}");
        assert_eq!(shown("short"), "\"short\"");
        let long = "x".repeat(65);
        assert_eq!(shown(&long), format!("\"{}…\" (65 bytes)", "x".repeat(64)));
        assert_eq!(cut(&long), format!("{}… (65 bytes)", "x".repeat(64)));
        assert_eq!(cut("bank.db"), "bank.db");
    }

    #[test]
    fn ids_are_checked_without_echoing_a_long_one() {
        assert_eq!(account("alice"), Ok("alice".to_owned()));
        let message = account(&"a".repeat(131_072)).expect_err("too long");
        assert!(message.len() < 200, "{message}");
        let message = command_id(&"c".repeat(131_072)).expect_err("too long");
        assert!(message.len() < 200, "{message}");
        assert!(command_id("pay-1").is_ok());
    }
}
