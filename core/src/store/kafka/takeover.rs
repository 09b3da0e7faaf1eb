//! Taking a partition: fence first, then read.
//!
//! [`take`] creates the partition's producer with
//! `transactional.id = <group>-<events topic>-<partition>` and calls `init_transactions`,
//! which fences every earlier producer with that id and aborts its open transaction. Only
//! then does it read (`read_committed`): the newest complete writer-state snapshot, the
//! events partition from the snapshot's offset (or the local store's checkpoint, when newer)
//! to its end, and the aggregate-snapshots partition. Reading before fencing could miss a
//! zombie's last commit; after fencing, the end read is final, since nobody else can commit
//! to the partition. Records before the snapshot that the local store lacks (a new machine)
//! are filled in by a background task; stream reads wait for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, Producer};

use crate::ids::{CommandId, Offset, Partition, StreamId, Topic};
use crate::store::{Error, Result};

use super::record;
use super::snapshot::WriterSnapshot;
use super::state::{Commit, CommittedCommand, LocalState};
use super::writer::{Ctx, Owned, Shared, Writer};

/// Fences every earlier writer of a partition: a producer with the partition's
/// `transactional.id`, initialised (a non-transactional store just makes the producer).
pub(crate) async fn fence(
    ctx: &Ctx,
    topic: &Topic,
    partition: Partition,
) -> Result<FutureProducer> {
    let events = ctx.names.events(topic);
    let transactional_id = ctx.transactional_id(&events, partition);
    let producer = ctx.create_producer(&transactional_id)?;
    if ctx.transactional {
        init_transactions(&producer, ctx.timeout)
            .await
            .map_err(|e| init_error(ctx, &transactional_id, &e))?;
    }
    Ok(producer)
}

/// [`fence`], on a thread that may block (a consumer group's rebalance callback).
pub(crate) fn fence_blocking(
    ctx: &Ctx,
    topic: &Topic,
    partition: Partition,
) -> Result<FutureProducer> {
    let events = ctx.names.events(topic);
    let transactional_id = ctx.transactional_id(&events, partition);
    let producer = ctx.create_producer(&transactional_id)?;
    if ctx.transactional {
        producer
            .init_transactions(ctx.timeout)
            .map_err(|e| init_error(ctx, &transactional_id, &e))?;
    }
    Ok(producer)
}

/// Takes a partition: fence (unless `fenced` is the producer that already did), then read,
/// then start the writer (see the module docs).
#[tracing::instrument(level = "debug", skip(ctx, fenced), fields(topic = %topic, partition = %partition))]
pub(crate) async fn take(
    ctx: Arc<Ctx>,
    topic: Topic,
    partitions: u32,
    partition: Partition,
    fenced: Option<FutureProducer>,
) -> Result<Owned> {
    let events = ctx.names.events(&topic);
    let transactional_id = ctx.transactional_id(&events, partition);
    let producer = match fenced {
        Some(producer) => producer,
        None => fence(&ctx, &topic, partition).await?,
    };
    std::fs::create_dir_all(&ctx.state_dir)
        .map_err(|e| Error::backend("create the local state directory", e))?;
    let path = ctx
        .state_dir
        .join(format!("{}-{events}-{partition}.db", ctx.group));
    let state = LocalState::open(&path, &topic, &events, partition).await?;
    let end = catch_up(&ctx, &state, &topic, partition).await?;
    let gap = state.meta().await?.gap;
    let shared = Arc::new(Shared::new(end, gap.is_none()));
    if let Some((from, to)) = gap {
        tokio::spawn(fill_gap(
            Arc::clone(&ctx),
            state.clone(),
            Arc::clone(&shared),
            topic.clone(),
            partition,
            from,
            to,
        ));
    }
    let (jobs, task) = Writer::start(
        Arc::clone(&ctx),
        topic,
        partitions,
        partition,
        events,
        transactional_id,
        producer,
        state.clone(),
        Arc::clone(&shared),
    );
    Ok(Owned {
        jobs,
        state,
        shared,
        task: std::sync::Mutex::new(Some(task)),
    })
}

/// Checks, at start-up, that the cluster accepts transactional producers: a clear error now
/// rather than at the first append.
pub(crate) async fn probe_transactions(ctx: &Ctx) -> Result<()> {
    let transactional_id = format!("{}-keel-probe", ctx.group);
    let producer = ctx.create_producer(&transactional_id)?;
    init_transactions(&producer, ctx.timeout)
        .await
        .map_err(|e| init_error(ctx, &transactional_id, &e))
}

pub(crate) async fn init_transactions(
    producer: &FutureProducer,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || producer.init_transactions(timeout))
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}

pub(crate) fn init_error(ctx: &Ctx, transactional_id: &str, e: &KafkaError) -> Error {
    Error::backend(
        "start Kafka transactions",
        super::KafkaStoreError::TransactionsRefused {
            bootstrap: ctx.bootstrap.clone(),
            transactional_id: transactional_id.to_owned(),
            reason: e.to_string(),
        },
    )
}

/// Brings the local store up to the partition's end (after fencing); returns the end.
pub(crate) async fn catch_up(
    ctx: &Ctx,
    state: &LocalState,
    topic: &Topic,
    partition: Partition,
) -> Result<Offset> {
    let events = ctx.names.events(topic);
    let mut meta = state.meta().await?;
    let end = ctx.reader.end(&events, partition).await?;
    if meta.next_offset > end {
        tracing::warn!(topic = %events, %partition, local = %meta.next_offset, %end,
            "the local state is ahead of the partition (was the topic recreated?): rebuilding it");
        state.reset().await?;
        meta = state.meta().await?;
    }
    if let Some(snapshot) = read_writer_snapshot(ctx, topic, partition).await?
        && snapshot.covers > meta.next_offset
        && snapshot.covers <= end
    {
        tracing::debug!(topic = %events, %partition, covers = %snapshot.covers,
            streams = snapshot.streams.len(), commands = snapshot.commands.len(),
            "starting from the writer-state snapshot");
        state.import(&snapshot, meta).await?;
        meta = state.meta().await?;
    }
    let end = replay_events(ctx, state, topic, partition, meta.next_offset).await?;
    replay_snapshots(ctx, state, topic, partition, meta.snapshots_next).await?;
    state.forget_commands(ctx.window_start()).await?;
    Ok(end)
}

/// The newest complete writer-state snapshot of a partition.
async fn read_writer_snapshot(
    ctx: &Ctx,
    topic: &Topic,
    partition: Partition,
) -> Result<Option<WriterSnapshot>> {
    let mut pages = ctx
        .reader
        .pages(&ctx.names.writer_state(topic), partition, Offset(0), 512);
    let mut latest: HashMap<String, Vec<u8>> = HashMap::new();
    while let Some(page) = pages.recv().await {
        let page = page?;
        for m in &page.messages {
            let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                continue;
            };
            match m.payload() {
                Some(value) => latest.insert(key.to_owned(), value.to_vec()),
                None => latest.remove(key),
            };
        }
        if page.end.is_some() {
            break;
        }
    }
    Ok(WriterSnapshot::decode(&latest))
}

/// Folds the events partition from `from` to its end into the local store.
async fn replay_events(
    ctx: &Ctx,
    state: &LocalState,
    topic: &Topic,
    partition: Partition,
    from: Offset,
) -> Result<Offset> {
    let events = ctx.names.events(topic);
    let since = ctx.window_start();
    let mut pages = ctx.reader.pages(&events, partition, from, 2000);
    let mut open: HashMap<(StreamId, CommandId), CommittedCommand> = HashMap::new();
    let mut end = from;
    let mut replayed = 0usize;
    while let Some(page) = pages.recv().await {
        let page = page?;
        let decoded = page
            .messages
            .iter()
            .map(|m| record::decode(topic, m))
            .collect::<Result<Vec<_>>>()?;
        let streams: Vec<&StreamId> = {
            let mut seen = std::collections::HashSet::new();
            decoded
                .iter()
                .map(|d| &d.record.stream)
                .filter(|s| seen.insert(*s))
                .collect()
        };
        let (mut versions, _) = state.ledger(&streams, &[], since).await?;
        let mut commit = Commit::default();
        let mut previous = std::mem::take(&mut open);
        for d in decoded {
            let r = d.record;
            let current = versions.get(&r.stream).copied().unwrap_or_default();
            if r.version != current.next() {
                return Err(Error::Corrupt {
                    topic: topic.clone(),
                    partition,
                    offset: r.offset(),
                    detail: format!(
                        "stream {} has version {} after version {current}: was the partition written without its fenced single writer?",
                        r.stream, r.version
                    ),
                });
            }
            versions.insert(r.stream.clone(), r.version);
            commit.streams.insert(r.stream.clone(), r.version);
            if let (Some(id), Some(fingerprint)) = (&r.command_id, d.fingerprint)
                && d.produced_at >= since
            {
                let key = (r.stream.clone(), id.clone());
                let entry = open.entry(key.clone()).or_insert_with(|| {
                    previous.remove(&key).unwrap_or_else(|| CommittedCommand {
                        stream: r.stream.clone(),
                        id: id.clone(),
                        fingerprint,
                        first_version: r.version,
                        offsets: Vec::new(),
                        committed_at: d.produced_at,
                    })
                });
                let continues = entry.fingerprint == fingerprint
                    && entry.first_version.0 + entry.offsets.len() as u64 == r.version.0;
                if !continues {
                    // The id was reused after the window: the newer append is the one to keep.
                    *entry = CommittedCommand {
                        stream: r.stream.clone(),
                        id: id.clone(),
                        fingerprint,
                        first_version: r.version,
                        offsets: Vec::new(),
                        committed_at: d.produced_at,
                    };
                }
                entry.offsets.push(r.offset());
            }
            end = r.position.offset.next();
            commit.events.push(r);
        }
        replayed += commit.events.len();
        commit.commands = open
            .values()
            .map(|c| CommittedCommand {
                stream: c.stream.clone(),
                id: c.id.clone(),
                fingerprint: c.fingerprint,
                first_version: c.first_version,
                offsets: c.offsets.clone(),
                committed_at: c.committed_at,
            })
            .collect();
        if let Some(e) = page.end {
            end = end.max(e);
        }
        commit.next_offset = Some(end);
        state.commit(&commit).await?;
        if page.end.is_some() {
            break;
        }
    }
    tracing::debug!(topic = %events, %partition, %from, %end, replayed, "caught up with the partition");
    Ok(end)
}

/// Applies the aggregate-snapshots partition from `from` to its end.
async fn replay_snapshots(
    ctx: &Ctx,
    state: &LocalState,
    topic: &Topic,
    partition: Partition,
    from: Offset,
) -> Result<()> {
    let name = ctx.names.snapshots(topic);
    let mut pages = ctx.reader.pages(&name, partition, from, 512);
    while let Some(page) = pages.recv().await {
        let page = page?;
        let mut commit = Commit::default();
        let mut next = from;
        for m in &page.messages {
            next = Offset(u64::try_from(m.offset()).unwrap_or(0) + 1);
            if let Some(s) = record::decode_snapshot(topic, m)? {
                commit.snapshots.push(s);
            }
        }
        commit.snapshots_next = Some(page.end.unwrap_or(next).max(next));
        state.commit(&commit).await?;
        if page.end.is_some() {
            break;
        }
    }
    Ok(())
}

/// Fills the local store's gap (records before the writer-state snapshot it started from).
async fn fill_gap(
    ctx: Arc<Ctx>,
    state: LocalState,
    shared: Arc<Shared>,
    topic: Topic,
    partition: Partition,
    from: Offset,
    to: Offset,
) {
    let events = ctx.names.events(&topic);
    let mut pages = ctx.reader.pages(&events, partition, from, 2000);
    let result: Result<()> = async {
        while let Some(page) = pages.recv().await {
            let page = page?;
            let mut records = Vec::new();
            let mut filled = from;
            for m in &page.messages {
                let d = record::decode(&topic, m)?;
                filled = d.record.offset().next();
                if d.record.offset() < to {
                    records.push(d.record);
                }
            }
            let done = filled >= to || page.end.is_some();
            state
                .fill_gap(&records, if done { to } else { filled })
                .await?;
            if done {
                return Ok(());
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            shared.complete.send_replace(true);
            tracing::debug!(topic = %events, %partition, %from, %to, "filled the local state's gap");
        }
        Err(e) => tracing::error!(topic = %events, %partition, error = %e,
            "filling the local state's gap failed; reads of this partition's streams wait until the next takeover"),
    }
}
