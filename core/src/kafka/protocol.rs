//! The records of routing: a command on its way to the owner of its stream's partition, and
//! its answer on the way back. Both are plain Kafka records (JSON values, UTF-8 headers), so
//! a Kafka console consumer can follow a command through the system.
//!
//! **A command** (commands topic, partition of its stream): key = the stream id, value = the
//! command as JSON (the generated command enum, serde), headers:
//!
//! | header | value |
//! |---|---|
//! | `keel.command-id` | the command id (the caller's, or a fresh one) |
//! | `keel.command` | the command's name (`deposit`), for people |
//! | `keel.reply-to` | the caller's instance id |
//! | `keel.reply-partition` | the caller's partition of the replies topic |
//! | `keel.request` | this send's id (a UUID): the answer names it, so two sends of one command id each get their own answer |
//! | `keel.correlation-id`, `keel.causation-id` | UUIDs, when given |
//! | `keel.metadata` | metadata for the events, a JSON object (when not empty) |
//! | `keel.expect-new` | `1` when the caller expects a new aggregate |
//!
//! **An answer** (replies topic, the caller's partition): key = the command id, headers
//! `keel.command-id`, `keel.request`, `keel.reply-to`, `keel.stream` and `keel.outcome`
//! (`committed`, `rejected` or `failed`), value = JSON:
//!
//! ```text
//! {"outcome":"committed","stream":"alice","version":3,"replayed":false,"attempts":1,
//!  "events":[{"type":"Deposited","schema":1,"version":3,"partition":2,"offset":17,"payload":"{\"amount\":5}"}]}
//! {"outcome":"rejected","error":{"InsufficientFunds":{…}},"message":"insufficient funds: …"}
//! {"outcome":"failed","kind":"command_id_reused","stream":"alice","command_id":"pay-1"}
//! ```

use std::str::FromStr;

use rdkafka::Message;
use rdkafka::message::{Header, Headers as _, OwnedHeaders, OwnedMessage};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Handle;
use crate::envelope::{Metadata, NewEvent};
use crate::event::{EncodeError, Event};
use crate::ids::{CommandId, Offset, Partition, Position, StreamId, StreamVersion, Topic};
use crate::repository::{self, Committed, CommittedEvent};
use crate::store::{self, AppendRequest, Appended};

/// The outcome of a command whose events committed (or that decided none).
pub(crate) const COMMITTED: &str = "committed";
/// The outcome of a command the aggregate rejected.
pub(crate) const REJECTED: &str = "rejected";
/// The outcome of a command that failed otherwise.
pub(crate) const FAILED: &str = "failed";

mod header {
    pub(super) const COMMAND_ID: &str = "keel.command-id";
    pub(super) const COMMAND: &str = "keel.command";
    pub(super) const REPLY_TO: &str = "keel.reply-to";
    pub(super) const REPLY_PARTITION: &str = "keel.reply-partition";
    pub(super) const REQUEST: &str = "keel.request";
    pub(super) const CORRELATION_ID: &str = "keel.correlation-id";
    pub(super) const CAUSATION_ID: &str = "keel.causation-id";
    pub(super) const METADATA: &str = "keel.metadata";
    pub(super) const EXPECT_NEW: &str = "keel.expect-new";
    pub(super) const STREAM: &str = "keel.stream";
    pub(super) const OUTCOME: &str = "keel.outcome";
}

fn push(headers: OwnedHeaders, key: &str, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key,
        value: Some(value.as_bytes()),
    })
}

/// What a caller sends, besides the command's JSON.
pub(crate) struct Outgoing<'a> {
    pub(crate) command_id: &'a CommandId,
    pub(crate) request: &'a str,
    pub(crate) command: &'a str,
    pub(crate) reply_to: &'a str,
    pub(crate) reply_partition: i32,
    pub(crate) correlation_id: Option<Uuid>,
    pub(crate) causation_id: Option<Uuid>,
    pub(crate) metadata: &'a Metadata,
    pub(crate) expect_new: bool,
}

/// The headers of a command record.
pub(crate) fn command_headers(out: &Outgoing<'_>) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(8);
    h = push(h, header::COMMAND_ID, out.command_id.as_str());
    h = push(h, header::COMMAND, out.command);
    h = push(h, header::REPLY_TO, out.reply_to);
    h = push(h, header::REPLY_PARTITION, &out.reply_partition.to_string());
    h = push(h, header::REQUEST, out.request);
    if let Some(id) = out.correlation_id {
        h = push(h, header::CORRELATION_ID, &id.to_string());
    }
    if let Some(id) = out.causation_id {
        h = push(h, header::CAUSATION_ID, &id.to_string());
    }
    if !out.metadata.is_empty() {
        // A map of strings always serialises.
        let json = serde_json::to_string(out.metadata).unwrap_or_default();
        h = push(h, header::METADATA, &json);
    }
    if out.expect_new {
        h = push(h, header::EXPECT_NEW, "1");
    }
    h
}

/// A command record as its partition's owner reads it.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) stream: StreamId,
    pub(crate) command_id: CommandId,
    pub(crate) payload: Vec<u8>,
    pub(crate) reply_to: String,
    pub(crate) reply_partition: i32,
    pub(crate) request: String,
    pub(crate) correlation_id: Option<Uuid>,
    pub(crate) causation_id: Option<Uuid>,
    pub(crate) metadata: Metadata,
    pub(crate) expect_new: bool,
}

fn headers_of(m: &OwnedMessage) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(headers) = m.headers() {
        for h in headers.iter() {
            if let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) {
                out.push((h.key.to_owned(), v.to_owned()));
            }
        }
    }
    out
}

/// Reads a command record of `topic`'s commands topic; an error says what is wrong with it.
pub(crate) fn decode_command(topic: &Topic, m: &OwnedMessage) -> Result<Incoming, String> {
    let headers = headers_of(m);
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let key = m
        .key()
        .and_then(|k| std::str::from_utf8(k).ok())
        .ok_or("the key is not a UTF-8 stream id")?;
    let stream = StreamId::in_topic(topic, key).map_err(|e| format!("stream id: {e}"))?;
    let command_id = CommandId::new(get(header::COMMAND_ID).ok_or("no keel.command-id header")?)
        .map_err(|e| format!("command id: {e}"))?;
    let uuid = |name: &str| -> Result<Option<Uuid>, String> {
        get(name)
            .map(|v| Uuid::from_str(v).map_err(|e| format!("{name}: {e}")))
            .transpose()
    };
    let metadata = match get(header::METADATA) {
        Some(json) => serde_json::from_str(json).map_err(|e| format!("metadata: {e}"))?,
        None => Metadata::new(),
    };
    Ok(Incoming {
        stream,
        command_id,
        payload: m.payload().unwrap_or_default().to_vec(),
        reply_to: get(header::REPLY_TO)
            .ok_or("no keel.reply-to header")?
            .to_owned(),
        reply_partition: get(header::REPLY_PARTITION)
            .and_then(|p| p.parse().ok())
            .ok_or("no keel.reply-partition header")?,
        request: get(header::REQUEST)
            .ok_or("no keel.request header")?
            .to_owned(),
        correlation_id: uuid(header::CORRELATION_ID)?,
        causation_id: uuid(header::CAUSATION_ID)?,
        metadata,
        expect_new: get(header::EXPECT_NEW) == Some("1"),
    })
}

/// The headers of an answer record.
pub(crate) fn reply_headers(
    command_id: &str,
    request: &str,
    instance: &str,
    stream: &str,
    outcome: &str,
) -> OwnedHeaders {
    let h = OwnedHeaders::new_with_capacity(5);
    let h = push(h, header::COMMAND_ID, command_id);
    let h = push(h, header::REQUEST, request);
    let h = push(h, header::REPLY_TO, instance);
    let h = push(h, header::STREAM, stream);
    push(h, header::OUTCOME, outcome)
}

/// An answer record's request id and addressee.
pub(crate) fn reply_address(m: &OwnedMessage) -> Option<(String, String)> {
    let headers = headers_of(m);
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    Some((get(header::REQUEST)?, get(header::REPLY_TO)?))
}

/// An answer's value.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Reply {
    Committed(CommittedReply),
    Rejected {
        /// The aggregate's error, as serde writes it.
        error: serde_json::Value,
        /// Its message, for people.
        message: String,
    },
    Failed(RemoteFailure),
}

/// A committed command's outcome.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CommittedReply {
    stream: String,
    version: u64,
    replayed: bool,
    attempts: u32,
    events: Vec<ReplyEvent>,
}

/// One event of a committed command.
#[derive(Debug, Serialize, Deserialize)]
struct ReplyEvent {
    #[serde(rename = "type")]
    event_type: String,
    schema: u32,
    version: u64,
    partition: u32,
    offset: u64,
    /// The payload: its text when UTF-8 (JSON for derived events), else hex.
    payload: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    hex: bool,
}

impl ReplyEvent {
    fn new(event: &NewEvent, version: StreamVersion, position: &Position) -> Self {
        let (payload, hex) = match std::str::from_utf8(&event.payload) {
            Ok(text) => (text.to_owned(), false),
            Err(_) => (
                event.payload.iter().map(|b| format!("{b:02x}")).collect(),
                true,
            ),
        };
        Self {
            event_type: event.event_type.clone(),
            schema: event.schema_version,
            version: version.0,
            partition: position.partition.0,
            offset: position.offset.0,
            payload,
            hex,
        }
    }

    fn payload(&self) -> Option<Vec<u8>> {
        if !self.hex {
            return Some(self.payload.clone().into_bytes());
        }
        (0..self.payload.len())
            .step_by(2)
            .map(|i| {
                self.payload
                    .get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect()
    }
}

/// Why a routed command failed, other than its aggregate's rejection.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum RemoteFailure {
    TooManyConflicts { stream: String, attempts: u32 },
    CommandIdReused { stream: String, command_id: String },
    Other { message: String },
}

fn encode(reply: &Reply) -> Vec<u8> {
    // Strings, numbers and JSON values always serialise.
    serde_json::to_vec(reply).unwrap_or_default()
}

/// The answer to a routed append just written: built from the request and the offsets the
/// broker gave (the writer knows nothing of the aggregate's types).
pub(crate) fn committed_from_append(request: &AppendRequest, appended: &Appended) -> Vec<u8> {
    let events = request
        .events
        .iter()
        .zip(appended.versions().zip(appended.positions()))
        .map(|(e, (version, position))| ReplyEvent::new(e, version, &position))
        .collect();
    encode(&Reply::Committed(CommittedReply {
        stream: request.stream.id().to_owned(),
        version: appended.last_version().0,
        replayed: appended.replayed,
        attempts: 1,
        events,
    }))
}

/// The answer to a routed command the repository ran: a replay, an empty decision, a
/// rejection or a failure. `None` when the command must not be answered here (this store
/// does not own its partition any more: the next owner answers it).
pub(crate) fn answer_of<A: Handle>(
    result: &Result<Committed<A::Event>, repository::Error<A::Error>>,
) -> Option<(&'static str, Vec<u8>)>
where
    A::Error: Serialize,
{
    let reply = match result {
        Ok(committed) => match committed_reply(committed) {
            Ok(reply) => reply,
            Err(e) => Reply::Failed(RemoteFailure::Other { message: chain(&e) }),
        },
        Err(repository::Error::Rejected(error)) => Reply::Rejected {
            error: serde_json::to_value(error).unwrap_or(serde_json::Value::Null),
            message: error.to_string(),
        },
        Err(repository::Error::Store(
            store::Error::NotOwner { .. } | store::Error::Fenced { .. },
        )) => {
            return None;
        }
        Err(repository::Error::TooManyConflicts { stream, attempts }) => {
            Reply::Failed(RemoteFailure::TooManyConflicts {
                stream: stream.id().to_owned(),
                attempts: *attempts,
            })
        }
        Err(repository::Error::Store(store::Error::CommandIdReused { stream, command_id })) => {
            Reply::Failed(RemoteFailure::CommandIdReused {
                stream: stream.id().to_owned(),
                command_id: command_id.to_string(),
            })
        }
        Err(other) => Reply::Failed(RemoteFailure::Other {
            message: chain(other),
        }),
    };
    let outcome = match &reply {
        Reply::Committed(_) => COMMITTED,
        Reply::Rejected { .. } => REJECTED,
        Reply::Failed(_) => FAILED,
    };
    Some((outcome, encode(&reply)))
}

/// A failure to answer with: the command did not decode, say.
pub(crate) fn failure(message: String) -> Vec<u8> {
    encode(&Reply::Failed(RemoteFailure::Other { message }))
}

fn committed_reply<E: Event>(committed: &Committed<E>) -> Result<Reply, EncodeError> {
    let events = committed
        .events
        .iter()
        .map(|e| {
            let new = NewEvent::from_event(&e.event)?;
            Ok(ReplyEvent::new(&new, e.version, &e.position))
        })
        .collect::<Result<_, EncodeError>>()?;
    Ok(Reply::Committed(CommittedReply {
        stream: committed.stream.id().to_owned(),
        version: committed.version.0,
        replayed: committed.replayed,
        attempts: committed.attempts,
        events,
    }))
}

/// The error chain of `e`, each cause once.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

/// A failure of the owner or of the answer itself, as the caller sees it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct RemoteError {
    message: String,
}

fn remote<E>(operation: &'static str, message: String) -> repository::Error<E> {
    repository::Error::Store(store::Error::backend(operation, RemoteError { message }))
}

/// Turns an answer's value into what the repository would have returned on the owner.
pub(crate) fn outcome<A: Handle>(
    topic: &Topic,
    value: &[u8],
) -> Result<Committed<A::Event>, repository::Error<A::Error>>
where
    A::Error: serde::de::DeserializeOwned,
{
    let reply: Reply = serde_json::from_slice(value).map_err(|e| {
        remote(
            "read the answer to a routed command",
            format!("the answer does not parse: {e}"),
        )
    })?;
    match reply {
        Reply::Committed(c) => {
            let stream = StreamId::in_topic(topic, &c.stream)?;
            let mut events = Vec::with_capacity(c.events.len());
            for e in c.events {
                let position = Position {
                    topic: topic.clone(),
                    partition: Partition(e.partition),
                    offset: Offset(e.offset),
                };
                let version = StreamVersion(e.version);
                let payload = e.payload().ok_or_else(|| {
                    remote(
                        "read the answer to a routed command",
                        format!("event at {position}: the payload is not hex"),
                    )
                })?;
                let event = A::Event::decode(&e.event_type, e.schema, &payload)
                    .map_err(|d| d.at(position.clone(), stream.clone(), version))?;
                events.push(CommittedEvent {
                    event,
                    version,
                    position,
                });
            }
            Ok(Committed {
                stream,
                events,
                version: StreamVersion(c.version),
                replayed: c.replayed,
                attempts: c.attempts,
            })
        }
        Reply::Rejected { error, message } => match serde_json::from_value::<A::Error>(error) {
            Ok(e) => Err(repository::Error::Rejected(e)),
            Err(e) => Err(remote(
                "read the answer to a routed command",
                format!(
                    "the owner rejected the command ({message}), and its error does not decode here: {e}"
                ),
            )),
        },
        Reply::Failed(RemoteFailure::TooManyConflicts { stream, attempts }) => {
            Err(repository::Error::TooManyConflicts {
                stream: StreamId::in_topic(topic, &stream)?,
                attempts,
            })
        }
        Reply::Failed(RemoteFailure::CommandIdReused { stream, command_id }) => {
            Err(repository::Error::Store(store::Error::CommandIdReused {
                stream: StreamId::in_topic(topic, &stream)?,
                command_id: CommandId::new(command_id)?,
            }))
        }
        Reply::Failed(RemoteFailure::Other { message }) => Err(remote(
            "run a command on the owner of its partition",
            message,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_payloads_round_trip_through_hex() {
        let event = NewEvent::raw("Bin", 1, vec![0xff, 0x00, 0x10]);
        let position = Position {
            topic: Topic::new("t").unwrap_or_else(|_| unreachable!()),
            partition: Partition(1),
            offset: Offset(7),
        };
        let e = ReplyEvent::new(&event, StreamVersion(2), &position);
        assert!(e.hex);
        assert_eq!(e.payload(), Some(vec![0xff, 0x00, 0x10]));
        let text = NewEvent::raw("Text", 1, b"{\"a\":1}".to_vec());
        let e = ReplyEvent::new(&text, StreamVersion(2), &position);
        assert!(!e.hex);
        assert_eq!(e.payload.as_str(), "{\"a\":1}");
    }
}
