//! Every error type's message, as a user sees it: `anyhow`'s `{}` (the error alone) says what
//! failed, and `{:#}` (the error and its causes, joined by ": ") says why — each text once.
//!
//! The errors are real ones where that is cheap (a refused id, a conflict, SQLite refusing a
//! file that is not a database), built from their public fields otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;

use keel::prelude::*;
use keel::store::memory::MemoryStore;
use keel::{
    AppendRequest, CommandId, CommandMeta, EventStore, ExpectedVersion, Fingerprint, NewEvent,
    Offset, Partition, Repository, StreamId, StreamVersion, Topic,
};
use keel_projections::store::ViewStore as _;
use keel_projections::store::memory::MemoryViews;
use serde::{Deserialize, Serialize};

/// The texts of an error and its causes, outermost first.
fn chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut texts = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(e) = cause {
        texts.push(e.to_string());
        cause = e.source();
    }
    texts
}

/// What `anyhow` prints with `{}` and `{:#}`, after checking that the full chain says each
/// link's own text once: no message repeats its source's text.
fn printed<E>(error: E) -> (String, String)
where
    E: std::error::Error + Send + Sync + 'static,
{
    let links = chain(&error);
    let error = anyhow::Error::new(error);
    let (short, full) = (format!("{error}"), format!("{error:#}"));
    for (i, link) in links.iter().enumerate() {
        // A later link's text inside an earlier one is the repetition `{:#}` would print.
        for earlier in links.iter().take(i) {
            assert!(
                !earlier.contains(link.as_str()),
                "the cause {link:?} is already said by {earlier:?}: {full}"
            );
        }
    }
    (short, full)
}

/// A note's events.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub enum NoteEvent {
    /// Written.
    Written {
        /// The text.
        text: String,
    },
    /// Tagged, with keys serde_json cannot encode.
    Tagged {
        /// The tags.
        tags: BTreeMap<Vec<u8>, u8>,
    },
}

/// Why a note refuses a command.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum NoteError {
    /// No text.
    #[error("a note cannot be empty")]
    Empty,
}

/// A note.
#[derive(Aggregate, Default, Debug)]
#[aggregate(kind = "note", event = NoteEvent, error = NoteError)]
pub struct Note;

impl Apply<NoteEvent> for Note {
    fn apply(&mut self, _event: &NoteEvent) {}
}

#[keel::commands]
impl Note {
    /// Writes the note.
    pub fn write(&self, text: String) -> Result<NoteEvent, NoteError> {
        if text.is_empty() {
            return Err(NoteError::Empty);
        }
        Ok(NoteEvent::Written { text })
    }

    /// Tags the note.
    pub fn tag(&self, tags: Vec<Vec<u8>>) -> NoteEvent {
        NoteEvent::Tagged {
            tags: tags.into_iter().map(|t| (t, 1)).collect(),
        }
    }
}

fn stream(id: &str) -> StreamId {
    StreamId::new("note", id).expect("a valid stream id")
}

fn topic() -> Topic {
    Topic::new("note").expect("a valid topic")
}

#[test]
fn id_errors_say_what_is_wrong_and_which_characters_are_allowed() {
    let (short, full) = printed(StreamId::new("note", "").expect_err("empty"));
    assert_eq!(short, "stream id is empty");
    assert_eq!(full, short);
    let (short, _) = printed(StreamId::new("note", "a".repeat(300)).expect_err("long"));
    assert_eq!(short, "stream id is 300 bytes long, the limit is 256");
    let (short, _) = printed(CommandId::new("pay 1").expect_err("a space"));
    assert_eq!(
        short,
        "command id \"pay 1\" holds ' ' at byte 3; allowed: ASCII letters, digits and - _ . : @ + ~ ="
    );
    let (short, _) = printed(StreamId::from_bytes("note", b"a\xff").expect_err("not UTF-8"));
    assert_eq!(
        short,
        "stream id is not valid UTF-8 (byte 1 starts an invalid sequence)"
    );
}

#[test]
fn encode_errors_name_the_type_and_give_serdes_reason_once() {
    let event = NoteEvent::Tagged {
        tags: [(vec![1], 1)].into_iter().collect(),
    };
    let (short, full) = printed(event.encode().expect_err("non-string keys"));
    assert_eq!(short, "cannot encode event Tagged");
    assert_eq!(full, "cannot encode event Tagged: key must be a string");
}

#[tokio::test]
async fn decode_errors_say_where_and_why_once() -> anyhow::Result<()> {
    let (short, full) = printed(NoteEvent::decode("Deleted", 1, b"{}").expect_err("unknown"));
    assert_eq!(
        short,
        "cannot decode event type \"Deleted\" (schema v1): unknown event type (known: Written, Tagged)"
    );
    assert_eq!(full, short);

    // A damaged payload read back from a store: the record is named by stream and position.
    let store = MemoryStore::with_default_partitions(1);
    let bad = NewEvent::raw("Written", 1, br#"{"text":5}"#.to_vec());
    store
        .append(AppendRequest::new(
            stream("n-1"),
            ExpectedVersion::Any,
            vec![bad],
        ))
        .await?;
    let records = store
        .read_partition(&topic(), Partition(0), Offset(0), 10)
        .await?;
    let record = records.first().expect("the record");
    let (short, full) = printed(record.decode::<NoteEvent>().expect_err("damaged"));
    assert_eq!(
        short,
        "cannot decode event type \"Written\" (schema v1) of stream note/n-1 version 1 at topic \
         note partition 0 offset 0: payload does not decode"
    );
    assert_eq!(
        full,
        format!("{short}: invalid type: integer `5`, expected a string at line 1 column 9")
    );
    Ok(())
}

#[tokio::test]
async fn event_store_errors_say_what_to_do() -> anyhow::Result<()> {
    let store = MemoryStore::with_default_partitions(1);
    let event = || NewEvent::raw("Written", 1, br#"{"text":"x"}"#.to_vec());
    let command = CommandMeta::new(CommandId::new("c-1")?, Fingerprint::of_bytes(b"one"));
    store
        .append(
            AppendRequest::new(stream("n-1"), ExpectedVersion::NoStream, vec![event()])
                .with_command(command),
        )
        .await?;

    let conflict = store
        .append(AppendRequest::new(
            stream("n-1"),
            ExpectedVersion::NoStream,
            vec![event()],
        ))
        .await
        .expect_err("a conflict");
    assert_eq!(
        printed(conflict).1,
        "conflict on stream note/n-1: expected no stream, stream is at version 1"
    );

    let other = CommandMeta::new(CommandId::new("c-1")?, Fingerprint::of_bytes(b"two"));
    let reused = store
        .append(
            AppendRequest::new(stream("n-1"), ExpectedVersion::Any, vec![event()])
                .with_command(other),
        )
        .await
        .expect_err("reused");
    assert_eq!(
        printed(reused).1,
        "command id c-1 was already used on stream note/n-1 for a different command"
    );

    let empty = store
        .append(AppendRequest::new(
            stream("n-2"),
            ExpectedVersion::Any,
            vec![],
        ))
        .await
        .expect_err("empty");
    assert_eq!(
        printed(empty).1,
        "empty append to stream note/n-2: an append needs at least one event"
    );

    let bad_type = NewEvent::raw("no spaces", 1, b"{}".to_vec());
    let invalid = store
        .append(AppendRequest::new(
            stream("n-2"),
            ExpectedVersion::Any,
            vec![event(), bad_type],
        ))
        .await
        .expect_err("a bad type name");
    let (short, full) = printed(invalid);
    assert_eq!(
        short,
        "event 1 (\"no spaces\") of the append to stream note/n-2 is invalid"
    );
    assert!(
        full.starts_with(&format!("{short}: bad event type name: event type")),
        "{full}"
    );

    let too_many = store
        .append(AppendRequest::new(
            stream("n-2"),
            ExpectedVersion::Any,
            (0..=keel::limits::MAX_EVENTS_PER_APPEND)
                .map(|_| event())
                .collect(),
        ))
        .await
        .expect_err("too many");
    assert_eq!(
        printed(too_many).1,
        "append to stream note/n-2 holds 1025 events, the limit is 1024"
    );

    let missing = store
        .read_partition(&Topic::new("nothing")?, Partition(0), Offset(0), 1)
        .await
        .expect_err("no such topic");
    assert_eq!(printed(missing).1, "topic nothing does not exist");
    let beyond = store
        .read_partition(&topic(), Partition(7), Offset(0), 1)
        .await
        .expect_err("no partition 7");
    assert_eq!(
        printed(beyond).1,
        "topic note has 1 partitions; partition 7 does not exist"
    );

    let corrupt = keel::store::Error::Corrupt {
        topic: topic(),
        partition: Partition(0),
        offset: Offset(3),
        detail: "stream id is empty".into(),
    };
    assert_eq!(
        printed(corrupt).1,
        "damaged record at topic note partition 0 offset 3: stream id is empty"
    );
    Ok(())
}

#[tokio::test]
async fn a_backend_error_gives_sqlites_reason_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notes.db");
    std::fs::write(&path, vec![b'x'; 4096])?;
    let refused = keel::store::sqlite::SqliteStore::open(&path)
        .await
        .expect_err("not a database");
    let (short, full) = printed(refused);
    assert_eq!(short, "open the SQLite file failed");
    assert!(full.starts_with("open the SQLite file failed: "), "{full}");
    assert_eq!(full.matches("file is not a database").count(), 1, "{full}");

    let views = keel_projections::store::sqlite::SqliteViews::open(&path)
        .await
        .expect_err("not a database");
    let (short, full) = printed(views);
    assert_eq!(short, "view store: open the view store failed");
    assert_eq!(full.matches("file is not a database").count(), 1, "{full}");
    Ok(())
}

#[tokio::test]
async fn repository_errors_give_the_reason_once() -> anyhow::Result<()> {
    let notes = Repository::<Note, _>::new(Arc::new(MemoryStore::new()));
    let invalid = notes
        .execute("bad id", NoteCommand::Write { text: "x".into() })
        .await
        .expect_err("a bad id");
    let (_, full) = printed(invalid);
    assert_eq!(
        full.matches("stream id \"bad id\" holds ' ' at byte 3")
            .count(),
        1,
        "{full}"
    );

    let encode = notes
        .execute(
            "n-1",
            NoteCommand::Tag {
                tags: vec![vec![1]],
            },
        )
        .await
        .expect_err("cannot encode");
    assert_eq!(
        printed(encode).1,
        "cannot encode event Tagged: key must be a string"
    );

    let conflicts = keel::repository::Error::<NoteError>::TooManyConflicts {
        stream: stream("n-1"),
        attempts: 10,
    };
    assert_eq!(
        printed(conflicts).1,
        "stream note/n-1 kept changing: gave up after 10 attempts"
    );
    Ok(())
}

/// Needs the repository's `Rejected` to display its reason (the lead's change to
/// `core/src/repository.rs`): `{}` alone says why the command was refused.
#[tokio::test]
async fn a_rejected_command_says_why_in_its_own_message() -> anyhow::Result<()> {
    let notes = Repository::<Note, _>::new(Arc::new(MemoryStore::new()));
    let rejected = notes
        .execute("n-1", NoteCommand::Write { text: "".into() })
        .await
        .expect_err("empty");
    assert!(matches!(
        rejected,
        keel::repository::Error::Rejected(NoteError::Empty)
    ));
    let (short, full) = printed(rejected);
    assert!(short.contains("a note cannot be empty"), "{short}");
    assert_eq!(full.matches("a note cannot be empty").count(), 1, "{full}");
    Ok(())
}

#[tokio::test]
async fn projection_errors_name_the_projection_and_the_event_once() -> anyhow::Result<()> {
    let event = keel_projections::EventRef {
        topic: topic(),
        partition: Partition(0),
        offset: Offset(4),
        stream: stream("n-1"),
        version: StreamVersion(2),
        event_type: "Written".into(),
    };
    let decode = keel_projections::Error::Decode {
        projection: "notes".into(),
        event: event.clone(),
        source: NoteEvent::decode("Written", 1, b"{").expect_err("damaged"),
    };
    let (short, full) = printed(decode);
    assert_eq!(
        short,
        "projection notes stopped at event \"Written\" of stream note/n-1 version 2 at topic note \
         partition 0 offset 4"
    );
    assert_eq!(
        full,
        format!(
            "{short}: cannot decode event type \"Written\" (schema v1): payload does not decode: \
             EOF while parsing an object at line 1 column 1"
        )
    );

    let handler = keel_projections::Error::Handler {
        projection: "notes".into(),
        event,
        source: "the note is too long for the index".into(),
    };
    assert_eq!(
        printed(handler).1,
        "projection notes failed on event \"Written\" of stream note/n-1 version 2 at topic note \
         partition 0 offset 4: the note is too long for the index"
    );

    let views = MemoryViews::<u8>::new();
    views
        .claim("notes", "runner-a", std::time::Duration::from_secs(30))
        .await?;
    let held = views
        .claim("notes", "runner-b", std::time::Duration::from_secs(30))
        .await
        .expect_err("held");
    let (short, _) = printed(held);
    assert!(
        short.starts_with("projection notes is held by runner-a"),
        "{short}"
    );

    let unknown = keel_projections::Projections::new()
        .get(&"x".repeat(128 * 1024))
        .map(|_| ())
        .expect_err("unknown");
    let (short, _) = printed(unknown);
    assert!(short.len() < 200, "a long name is cut: {short}");
    assert!(short.contains("(131072 bytes)"), "{short}");
    Ok(())
}

#[tokio::test]
async fn transfer_errors_say_whether_money_moved_and_why() -> anyhow::Result<()> {
    let bank = bank::Bank::new(Arc::new(MemoryStore::new()));
    bank.open("a", "Ann", 0, None).await?;
    bank.open("b", "Ben", 0, None).await?;
    let same = bank
        .transfer("a", "a", 5, &CommandId::new("t-1")?)
        .await
        .expect_err("same account");
    assert_eq!(printed(same).1, "an account cannot transfer to itself");

    let long_id = CommandId::new("t".repeat(keel::limits::MAX_ID_BYTES))?;
    let bad_id = bank
        .transfer("a", "b", 5, &long_id)
        .await
        .expect_err("no room for the legs' suffix");
    let (short, full) = printed(bad_id);
    assert_eq!(short, "the transfer id cannot name its legs");
    assert!(full.ends_with("bytes long, the limit is 256"), "{full}");

    let refused = bank
        .transfer("a", "b", 5, &CommandId::new("t-2")?)
        .await
        .expect_err("no money");
    let (short, full) = printed(refused);
    assert_eq!(short, "nothing was transferred (account a)");
    assert_eq!(full.matches("insufficient funds").count(), 1, "{full}");
    Ok(())
}

#[test]
fn snapshot_errors_name_the_kind_and_give_serdes_reason_once() {
    let serde = serde_json::from_slice::<u64>(b"\"x\"").expect_err("not a number");
    let (short, full) = printed(keel::SnapshotError::new("note", "decode", serde));
    assert_eq!(short, "cannot decode a snapshot of aggregate kind note");
    assert_eq!(
        full,
        "cannot decode a snapshot of aggregate kind note: invalid type: string \"x\", expected u64 at line 1 column 3"
    );
}
