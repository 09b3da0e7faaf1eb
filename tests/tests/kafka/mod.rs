//! Helpers shared by the Kafka tests: unique topic prefixes, the append worker's
//! acknowledgements, and a check of a whole topic against what was acknowledged.

#![allow(
    dead_code,
    reason = "each test file uses its own subset of the helpers"
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use keel::store::kafka::{KafkaStore, KafkaStoreBuilder};
use keel::{
    Appended, CommandId, EventStore, Offset, Partition, RecordedEvent, StreamVersion, Topic,
};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// A topic prefix no other test uses (also the store's group).
pub(crate) fn unique_prefix(test: &str) -> String {
    format!("keel-{test}-{}.", uuid_like())
}

fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{:x}{:08x}", nanos, random as u32)
}

/// A store builder for `prefix` on `bootstrap`, one replica.
pub(crate) fn builder(bootstrap: &str, prefix: &str) -> KafkaStoreBuilder {
    KafkaStore::builder(bootstrap)
        .topic_prefix(prefix)
        .group(prefix.trim_end_matches('.'))
        .replication_factor(1)
}

/// One acknowledged append of the worker.
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    pub(crate) stream: String,
    pub(crate) command: String,
    pub(crate) partition: u32,
    pub(crate) first_version: u64,
    pub(crate) offsets: Vec<u64>,
}

impl Ack {
    pub(crate) fn from_appended(a: &Appended, command: &str) -> Self {
        Self {
            stream: a.stream.id().to_owned(),
            command: command.to_owned(),
            partition: a.partition.0,
            first_version: a.first_version.0,
            offsets: a.offsets.iter().map(|o| o.0).collect(),
        }
    }
}

pub(crate) fn parse(line: &str) -> Option<Ack> {
    let mut parts = line.split_whitespace();
    (parts.next()? == "ACK").then_some(())?;
    Some(Ack {
        stream: parts.next()?.to_owned(),
        command: parts.next()?.to_owned(),
        partition: parts.next()?.parse().ok()?,
        first_version: parts.next()?.parse().ok()?,
        offsets: parts.map(|o| o.parse().ok()).collect::<Option<Vec<_>>>()?,
    })
}

/// The append worker, started for `prefix` on `bootstrap`.
pub(crate) fn spawn_worker(
    bootstrap: &str,
    prefix: &str,
    round: u64,
    replication: u16,
) -> anyhow::Result<(Child, Lines<BufReader<ChildStdout>>)> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kafka_append_worker"))
        .arg(bootstrap)
        .arg(prefix)
        .arg(round.to_string())
        .arg(replication.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    Ok((child, BufReader::new(stdout).lines()))
}

/// Reads acknowledgements until `n` more arrived (or the worker stopped).
pub(crate) async fn wait_for_acks(
    lines: &mut Lines<BufReader<ChildStdout>>,
    n: usize,
    within: Duration,
    acks: &mut Vec<Ack>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = 0;
    while seen < n {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("only {seen} of {n} acknowledgements within {within:?}"))??
            .ok_or_else(|| {
                anyhow::anyhow!("the worker stopped after {seen} of {n} acknowledgements")
            })?;
        if let Some(ack) = parse(&line) {
            acks.push(ack);
            seen += 1;
        }
    }
    Ok(())
}

/// SIGKILLs the worker and collects the acknowledgements it printed before dying.
pub(crate) async fn kill(
    mut child: Child,
    mut lines: Lines<BufReader<ChildStdout>>,
    acks: &mut Vec<Ack>,
) -> anyhow::Result<()> {
    child.start_kill()?;
    let status = child.wait().await?;
    anyhow::ensure!(!status.success(), "the worker was killed, not finished");
    while let Ok(Some(line)) = lines.next_line().await {
        acks.extend(parse(&line));
    }
    Ok(())
}

/// Every record of a topic, read through `store`, by partition.
pub(crate) async fn read_all(
    store: &KafkaStore,
    topic: &Topic,
    partitions: u32,
) -> anyhow::Result<BTreeMap<u32, Vec<RecordedEvent>>> {
    let mut all = BTreeMap::new();
    for p in 0..partitions {
        let mut records = Vec::new();
        let mut from = Offset(0);
        loop {
            let page = store
                .read_partition(topic, Partition(p), from, 1000)
                .await?;
            let Some(last) = page.last() else { break };
            from = last.offset().next();
            records.extend(page);
        }
        all.insert(p, records);
    }
    Ok(all)
}

/// Checks a topic against the acknowledged appends: every acknowledged append is where it was
/// acknowledged, exactly once; every stream's versions are 1..n with no gap or duplicate; no
/// event id appears twice; every append present is whole (its command's events all there).
/// Returns how many records the topic holds.
pub(crate) fn check_exactly_once(
    all: &BTreeMap<u32, Vec<RecordedEvent>>,
    acks: &[Ack],
    events_per_append: usize,
) -> usize {
    let mut by_position: HashMap<(u32, u64), &RecordedEvent> = HashMap::new();
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut event_ids = HashSet::new();
    let mut per_command: HashMap<(String, String), usize> = HashMap::new();
    let mut count = 0;
    for (p, records) in all {
        assert!(
            records.windows(2).all(|w| w[0].offset() < w[1].offset()),
            "partition {p}: strictly increasing offsets"
        );
        for r in records {
            count += 1;
            assert!(
                event_ids.insert(r.event_id),
                "event {} at {} appears twice",
                r.event_id,
                r.position
            );
            by_position.insert((*p, r.offset().0), r);
            versions
                .entry(r.stream.id().to_owned())
                .or_default()
                .push(r.version.0);
            if let Some(c) = &r.command_id {
                *per_command
                    .entry((r.stream.id().to_owned(), c.to_string()))
                    .or_default() += 1;
            }
        }
    }
    for (stream, v) in &versions {
        assert_eq!(
            *v,
            (1..=v.len() as u64).collect::<Vec<_>>(),
            "stream {stream}: versions dense from 1, each once"
        );
    }
    for ((stream, command), n) in &per_command {
        assert_eq!(
            *n, events_per_append,
            "the append of {command} to {stream} is whole and written once"
        );
    }
    for ack in acks {
        for (k, offset) in ack.offsets.iter().enumerate() {
            let r = by_position
                .get(&(ack.partition, *offset))
                .unwrap_or_else(|| panic!("acknowledged {} lost offset {offset}", ack.command));
            assert_eq!(r.stream.id(), ack.stream, "{} at {offset}", ack.command);
            assert_eq!(r.version, StreamVersion(ack.first_version + k as u64));
            assert_eq!(
                r.command_id.as_ref().map(CommandId::as_str),
                Some(ack.command.as_str())
            );
        }
    }
    count
}
