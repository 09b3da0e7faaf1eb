//! Upcasting: reading records stored with an older schema version of their type.
//!
//! A variant of an event enum declares, with the `Event` derive, one function per version
//! step: `upcast(from = N, with = path)` turns the stored JSON of version N into version
//! N + 1. [`Event::decode`](crate::Event::decode) applies the chain from the record's version
//! up to the current one, then decodes the result, so every reader (an aggregate's load, a
//! projection, a process manager) sees only current events and none of them has code for
//! old shapes.
//!
//! - **The common case costs nothing**: a record of the current version is decoded straight
//!   from its bytes, as before; the chain, through a [`serde_json::Value`], runs only for an
//!   older record.
//! - **No path is an error**, not a guess: a record of a version no upcaster starts from is
//!   [`NoUpcastPath`](crate::DecodeErrorKind::NoUpcastPath), naming the version.
//! - **Newer than the code is refused**: a record written by a newer build
//!   ([`NewerThanCode`](crate::DecodeErrorKind::NewerThanCode)) says to upgrade; it is never
//!   read as the older shape.
//!
//! An upcaster returns the new JSON, or a `Result` of it when the old record may not convert
//! (its error, anything convertible into a boxed error, becomes
//! [`Upcast`](crate::DecodeErrorKind::Upcast)):
//!
//! ```
//! use keel::prelude::*;
//! use keel::upcast::{Value, json};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
//! enum AccountEvent {
//!     // v1 was `{"owner":"Ann"}`; v2 added the currency; v3 split the owner's name.
//!     #[event(version = 3, upcast(from = 1, with = add_currency), upcast(from = 2, with = split_owner))]
//!     Opened { first_name: String, last_name: String, currency: String },
//! }
//!
//! fn add_currency(mut v1: Value) -> Value {
//!     v1["currency"] = json!("EUR");
//!     v1
//! }
//!
//! fn split_owner(mut v2: Value) -> Result<Value, String> {
//!     let owner = v2["owner"].as_str().ok_or("no owner")?.to_owned();
//!     let (first, last) = owner.split_once(' ').unwrap_or((&owner, ""));
//!     v2["first_name"] = json!(first);
//!     v2["last_name"] = json!(last);
//!     Ok(v2)
//! }
//!
//! let stored = AccountEvent::decode("Opened", 1, br#"{"owner":"Ann Lee"}"#)?;
//! assert_eq!(
//!     stored,
//!     AccountEvent::Opened { first_name: "Ann".into(), last_name: "Lee".into(), currency: "EUR".into() }
//! );
//! let newer = AccountEvent::decode("Opened", 4, b"{}").expect_err("refused");
//! assert!(newer.to_string().contains("upgrade this service"));
//! # Ok::<_, keel::DecodeError>(())
//! ```

use serde::de::DeserializeOwned;

use crate::event::{DecodeError, DecodeErrorKind};

/// The JSON an upcaster takes and returns, and the macro to build it with: serde_json's,
/// re-exported so an app needs no dependency of its own.
pub use serde_json::{Map, Value, json};

/// A boxed error, as upcasters report them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An upcaster refused a payload ([`DecodeErrorKind::Upcast`]).
#[derive(Debug, thiserror::Error)]
#[error("the upcaster from schema version {from} failed")]
#[non_exhaustive]
pub struct UpcastError {
    /// The version it upcasts from.
    pub from: u32,
    /// Its own error.
    #[source]
    pub source: BoxError,
}

/// What an upcaster may return: the new JSON, or a `Result` of it.
#[diagnostic::on_unimplemented(
    message = "an upcaster cannot return `{Self}`",
    label = "expected `serde_json::Value` or `Result<serde_json::Value, E>`",
    note = "an upcaster is `fn(serde_json::Value) -> serde_json::Value` (or `-> Result<serde_json::Value, E>` where `E` converts into a boxed error): it turns the JSON of one version into the next"
)]
pub trait UpcastOutput {
    /// The new JSON, or why the old could not convert.
    ///
    /// # Errors
    ///
    /// The upcaster's own error, boxed.
    fn into_upcast(self) -> Result<Value, BoxError>;
}

impl UpcastOutput for Value {
    fn into_upcast(self) -> Result<Value, BoxError> {
        Ok(self)
    }
}

impl<E: Into<BoxError>> UpcastOutput for Result<Value, E> {
    fn into_upcast(self) -> Result<Value, BoxError> {
        self.map_err(Into::into)
    }
}

/// One step of a chain, as the derive generates it: from a version to the next.
pub(crate) type Step = fn(Value) -> Result<Value, BoxError>;

/// Decodes variant `tag` from a record of version `stored`, which is not `current`: runs
/// the upcasters `steps` (`(from, step)` pairs) from `stored` up to `current`, then decodes.
/// Out of line and cold: the current version never comes here.
#[cold]
#[inline(never)]
pub(crate) fn decode_older<T: DeserializeOwned>(
    tag: &'static str,
    event_type: &str,
    stored: u32,
    current: u32,
    payload: &[u8],
    steps: &[(u32, Step)],
) -> Result<T, DecodeError> {
    let error = |kind| DecodeError::new(event_type, stored, kind);
    if stored > current {
        return Err(error(DecodeErrorKind::NewerThanCode { current }));
    }
    // Find the whole path before reading anything: a gap is the error, whatever the payload.
    let mut chain = Vec::with_capacity((current - stored) as usize);
    for from in stored..current {
        match steps.iter().find(|(step_from, _)| *step_from == from) {
            Some((_, step)) => chain.push((from, *step)),
            None => {
                return Err(error(DecodeErrorKind::NoUpcastPath {
                    missing: from,
                    current,
                }));
            }
        }
    }
    let mut value: Value = serde_json::from_slice(payload)
        .map_err(|source| DecodeError::payload(event_type, stored, source))?;
    for (from, step) in chain {
        value = step(value).map_err(|source| {
            error(DecodeErrorKind::Upcast(Box::new(UpcastError {
                from,
                source,
            })))
        })?;
    }
    let bytes = serde_json::to_vec(&value)
        .map_err(|source| error(DecodeErrorKind::Upcasted { current, source }))?;
    crate::event::decode_variant(tag, event_type, stored, &bytes).map_err(|e| match e.kind {
        DecodeErrorKind::Payload(source) => error(DecodeErrorKind::Upcasted { current, source }),
        _ => e,
    })
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Sample {
        Opened { owner: String, currency: String },
    }

    fn add_currency(mut v: Value) -> Result<Value, BoxError> {
        v["currency"] = json!("EUR");
        Ok(v)
    }

    fn rename_owner(v: Value) -> Result<Value, BoxError> {
        let name = v.get("name").cloned().ok_or("no name")?;
        Ok(json!({ "owner": name }))
    }

    const STEPS: &[(u32, Step)] = &[(1, rename_owner), (2, add_currency)];

    fn decode(stored: u32, payload: &[u8]) -> Result<Sample, DecodeError> {
        decode_older("Opened", "Opened", stored, 3, payload, STEPS)
    }

    #[test]
    fn the_chain_runs_from_the_stored_version_up() {
        let want = Sample::Opened {
            owner: "ann".into(),
            currency: "EUR".into(),
        };
        assert_eq!(decode(1, br#"{"name":"ann"}"#).expect("v1"), want);
        assert_eq!(decode(2, br#"{"owner":"ann"}"#).expect("v2"), want);
    }

    #[test]
    fn newer_records_are_refused_and_gaps_named() {
        let newer = decode(4, b"{}").expect_err("newer");
        assert!(
            matches!(newer.kind, DecodeErrorKind::NewerThanCode { current: 3 }),
            "{newer}"
        );
        assert!(
            newer.to_string().contains("upgrade this service"),
            "{newer}"
        );
        let gap = decode_older::<Sample>("Opened", "Opened", 1, 3, b"{}", &STEPS[1..])
            .expect_err("no step from 1");
        assert!(
            matches!(
                gap.kind,
                DecodeErrorKind::NoUpcastPath {
                    missing: 1,
                    current: 3
                }
            ),
            "{gap}"
        );
        let zero = decode(0, b"{}").expect_err("no step from 0");
        assert!(
            matches!(zero.kind, DecodeErrorKind::NoUpcastPath { missing: 0, .. }),
            "{zero}"
        );
    }

    #[test]
    fn upcaster_and_payload_failures_are_told_apart() {
        let refused = decode(1, br#"{"other":1}"#).expect_err("no name");
        assert!(
            matches!(&refused.kind, DecodeErrorKind::Upcast(e) if e.from == 1),
            "{refused}"
        );
        assert_eq!(
            refused.to_string(),
            "cannot decode event type \"Opened\" (schema v1): the upcaster from schema version 1 failed"
        );
        let source = std::error::Error::source(&refused).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("no name"));
        let bad = decode(2, b"{").expect_err("not JSON");
        assert!(matches!(bad.kind, DecodeErrorKind::Payload(_)), "{bad}");
        let wrong = decode(2, br#"{"owner":5}"#).expect_err("owner is a number");
        assert!(
            matches!(wrong.kind, DecodeErrorKind::Upcasted { current: 3, .. }),
            "{wrong}"
        );
    }

    #[test]
    fn outputs_convert() {
        assert_eq!(json!(1).into_upcast().expect("value"), json!(1));
        let failed: Result<Value, &str> = Err("no");
        assert_eq!(failed.into_upcast().expect_err("error").to_string(), "no");
    }
}
