//! The SIGKILL durability check (conformance case 20) shared by the durable backends' crash
//! tests: child processes (`append_worker`) append from several tasks and are killed at random
//! moments; afterwards every append they acknowledged must be where it was acknowledged, whole,
//! and remembered by its command id, and no unacknowledged append may be half there.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::process::Stdio;
use std::time::Duration;

use keel::{
    AppendRequest, CommandId, CommandMeta, EventStore, ExpectedVersion, Fingerprint, NewEvent,
    Offset, Partition, StreamId, StreamVersion, Topic,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// One acknowledged append, as the worker printed it.
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    stream: String,
    command: String,
    partition: u32,
    first_version: u64,
    offsets: Vec<u64>,
}

impl Ack {
    /// The acknowledgement of `appended`, committed under `command`.
    #[allow(dead_code, reason = "used by the tests that append in process")]
    pub(crate) fn of(command: &str, appended: &keel::Appended) -> Self {
        Self {
            stream: appended.stream.id().to_owned(),
            command: command.to_owned(),
            partition: appended.partition.0,
            first_version: appended.first_version.0,
            offsets: appended.offsets.iter().map(|o| o.0).collect(),
        }
    }
}

fn parse(line: &str) -> Option<Ack> {
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

/// A number in `1..=n`, different on every call.
fn random_up_to(n: u64) -> u64 {
    1 + std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % n
}

/// Runs `rounds` workers one after the other, each made by `worker(round)`, and kills each with
/// SIGKILL once it has acknowledged a random number of appends (1 to `most`), while its tasks
/// still append. Returns every acknowledgement printed before the kills.
#[allow(dead_code, reason = "not every crash test kills workers")]
pub(crate) async fn kill_workers(
    rounds: u64,
    most: u64,
    worker: impl Fn(u64) -> tokio::process::Command,
) -> anyhow::Result<Vec<Ack>> {
    let mut acks = Vec::new();
    for round in 0..rounds {
        let mut child = worker(round)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let kill_after = random_up_to(most);
        let mut seen = 0;
        while seen < kill_after {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .map_err(|_| anyhow::anyhow!("round {round}: no acknowledgement within 60 s"))??
                .ok_or_else(|| {
                    anyhow::anyhow!("round {round}: the worker stopped after {seen} appends")
                })?;
            if let Some(ack) = parse(&line) {
                acks.push(ack);
                seen += 1;
            }
        }
        child.start_kill()?; // SIGKILL on Unix
        let status = child.wait().await?;
        anyhow::ensure!(
            !status.success(),
            "round {round}: the worker was killed, not finished"
        );
        // What it printed before it died.
        while let Some(line) = lines.next_line().await? {
            acks.extend(parse(&line));
        }
    }
    Ok(acks)
}

/// Checks `store` (topic `crash`, 2 partitions) after the kills: dense partitions, every
/// acknowledged append where it was acknowledged, every append whole, no version gap, and the
/// acknowledged command ids remembered.
pub(crate) async fn check_survivors(store: &dyn EventStore, acks: &[Ack]) -> anyhow::Result<()> {
    let topic = Topic::new("crash")?;
    let mut by_position: HashMap<(u32, u64), keel::RecordedEvent> = HashMap::new();
    let mut per_command: HashMap<String, usize> = HashMap::new();
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in 0..2 {
        let records = store
            .read_partition(&topic, Partition(p), Offset(0), usize::MAX >> 1)
            .await?;
        let offsets: Vec<u64> = records.iter().map(|r| r.offset().0).collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as u64).collect::<Vec<_>>(),
            "partition {p} is dense"
        );
        for r in records {
            *per_command
                .entry(
                    r.command_id
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                )
                .or_default() += 1;
            versions
                .entry(r.stream.id().to_owned())
                .or_default()
                .push(r.version.0);
            by_position.insert((p, r.offset().0), r);
        }
    }
    // Every acknowledged append is where it was acknowledged.
    for ack in acks {
        for (k, offset) in ack.offsets.iter().enumerate() {
            let r = by_position
                .get(&(ack.partition, *offset))
                .unwrap_or_else(|| panic!("acknowledged {} lost offset {offset}", ack.command));
            assert_eq!(r.stream.id(), ack.stream);
            assert_eq!(r.version, StreamVersion(ack.first_version + k as u64));
            assert_eq!(
                r.command_id.as_ref().map(CommandId::as_str),
                Some(ack.command.as_str())
            );
        }
    }
    // No partial append: every command id present has all 3 events; no version gap.
    for (command, n) in per_command {
        assert_eq!(n, 3, "append {command} is whole");
    }
    for (stream, v) in versions {
        assert_eq!(
            v,
            (1..=v.len() as u64).collect::<Vec<_>>(),
            "stream {stream} has no gap"
        );
    }
    // Command ids are remembered across the crashes: a retry is answered, not written again.
    for ack in acks.iter().step_by((acks.len() / 50).max(1)) {
        let stream = StreamId::new("crash", &ack.stream)?;
        let retry = AppendRequest::new(
            stream,
            ExpectedVersion::Any,
            vec![NewEvent::raw("Tested", 1, b"{}".to_vec())],
        )
        .with_command(CommandMeta::new(
            CommandId::new(&ack.command)?,
            Fingerprint::of_bytes(ack.command.as_bytes()),
        ));
        let replay = store.append(retry).await?;
        assert!(
            replay.replayed,
            "{} is remembered after the crash",
            ack.command
        );
        assert_eq!(
            replay.offsets.iter().map(|o| o.0).collect::<Vec<_>>(),
            ack.offsets
        );
    }
    Ok(())
}
