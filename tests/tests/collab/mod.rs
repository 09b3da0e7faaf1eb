//! Helpers for the tests of process managers, tables, joins and windows: a topic of requests
//! written straight into the log, and an outbox aggregate whose every command appends (it
//! never deduplicates by state), so that only derived command ids can keep an effect from
//! happening twice.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use keel::prelude::*;
use keel::store::EventStore;
use keel::{
    AppendRequest, CommandOptions, ExpectedVersion, NewEvent, RecordedEvent, Repository, StreamId,
    StreamVersion, Timestamp, Topic,
};
use keel_projections::BoxError;
use serde::{Deserialize, Serialize};

/// Events of the `request` topic, written straight into the log by the tests.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub enum RequestEvent {
    /// A request was opened; answers count until `wait_ms` after it.
    Opened {
        /// Who it is for (a table key).
        customer: String,
        /// An amount (for windows).
        amount: u64,
        /// The event time, for windows that read it from the payload (µs).
        at: i64,
        /// How long answers count.
        wait_ms: u64,
    },
    /// The request was answered.
    Answered {
        /// By whom.
        by: String,
    },
}

/// Events of the `customer` topic: rows of a table.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub enum CustomerEvent {
    /// A customer's name was set.
    Named {
        /// The name.
        name: String,
    },
    /// The customer left.
    Left,
}

/// What the outbox records.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub enum OutboxEvent {
    /// An effect happened.
    Recorded {
        /// What.
        text: String,
    },
}

/// The outbox never refuses.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Never happens.
    #[error("never")]
    Never,
}

/// Every command appends: duplicates would show.
#[derive(Aggregate, Default, Debug)]
#[aggregate(kind = "outbox", event = OutboxEvent, error = OutboxError)]
pub struct Outbox;

impl Apply<OutboxEvent> for Outbox {
    fn apply(&mut self, _: &OutboxEvent) {}
}

#[keel::commands]
impl Outbox {
    /// Records `text`.
    pub fn record(&self, text: String) -> OutboxEvent {
        OutboxEvent::Recorded { text }
    }
}

/// Sends `text` to outbox `id` under `options`.
pub async fn record<S: EventStore + ?Sized>(
    outbox: &Repository<Outbox, S>,
    id: &str,
    text: String,
    options: CommandOptions,
) -> Result<(), BoxError> {
    outbox
        .execute_with(id, OutboxCommand::Record { text }, options)
        .await?;
    Ok(())
}

pub fn request_topic() -> Topic {
    Topic::new("request").expect("a valid topic")
}

pub fn customer_topic() -> Topic {
    Topic::new("customer").expect("a valid topic")
}

/// Appends `event` to `topic/id`, returning its record.
pub async fn append<E: Event>(
    log: &dyn EventStore,
    topic: &str,
    id: &str,
    event: &E,
) -> anyhow::Result<RecordedEvent> {
    let stream = StreamId::new(topic, id)?;
    let appended = log
        .append(AppendRequest::new(
            stream.clone(),
            ExpectedVersion::Any,
            vec![NewEvent::from_event(event)?],
        ))
        .await?;
    let records = log.read_stream(&stream, appended.first_version).await?;
    records
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the appended record is not there"))
}

/// Every text the outbox recorded, with its stream id and command id, in log order per
/// stream.
pub async fn outbox(log: &dyn EventStore) -> anyhow::Result<Vec<(String, String, String)>> {
    let topic = Topic::new("outbox")?;
    let mut out = Vec::new();
    let Some(info) = log.topics().await?.into_iter().find(|t| t.topic == topic) else {
        return Ok(out);
    };
    for p in 0..info.partitions {
        for r in log
            .read_partition(&topic, keel::Partition(p), keel::Offset(0), 1 << 20)
            .await?
        {
            let OutboxEvent::Recorded { text } = r.decode()?;
            out.push((
                r.stream.id().to_owned(),
                r.command_id.map(|c| c.to_string()).unwrap_or_default(),
                text,
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// The version of a stream.
pub async fn version(log: &dyn EventStore, topic: &str, id: &str) -> anyhow::Result<StreamVersion> {
    Ok(log.stream_version(&StreamId::new(topic, id)?).await?)
}

/// `t` plus `ms` milliseconds.
pub fn plus(t: Timestamp, ms: i64) -> Timestamp {
    Timestamp(t.0 + ms * 1000)
}

/// Waits for `check` to hold, polling, for at most a minute (the state a test needs, never a
/// fixed sleep).
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("gave up waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A shared memory log.
pub fn memory_log() -> Arc<dyn EventStore> {
    Arc::new(keel::store::memory::MemoryStore::new())
}
