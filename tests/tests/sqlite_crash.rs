//! Durability under SIGKILL (conformance case 20) on a real SQLite file: a child process
//! appends from several tasks and is killed at random moments; every append it acknowledged
//! must be there, where it was acknowledged, and no unacknowledged append is half there.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::process::Stdio;
use std::time::Duration;

use keel::store::sqlite::SqliteStore;
use keel::{
    AppendRequest, CommandId, CommandMeta, EventStore, ExpectedVersion, Fingerprint, NewEvent,
    Offset, Partition, StreamId, StreamVersion, Topic,
};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Clone)]
struct Ack {
    stream: String,
    command: String,
    partition: u32,
    first_version: u64,
    offsets: Vec<u64>,
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

fn random_below(n: u64) -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("crash.db");
    let mut acks: Vec<Ack> = Vec::new();
    for round in 0..6 {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_append_worker"))
            .arg(&db)
            .arg(round.to_string())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        // Wait for the first acknowledgement so every round kills a process mid-run.
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await??
            .ok_or_else(|| anyhow::anyhow!("round {round}: the worker acknowledged nothing"))?;
        acks.extend(parse(&first));
        let kill_after = Duration::from_millis(50 + random_below(400));
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                seen.extend(parse(&line));
            }
            seen
        });
        tokio::time::sleep(kill_after).await;
        child.start_kill()?; // SIGKILL on Unix
        let status = child.wait().await?;
        assert!(
            !status.success(),
            "round {round}: the worker was killed, not finished"
        );
        acks.extend(reader.await?);
    }
    assert!(
        acks.len() > 20,
        "the workers acknowledged appends ({})",
        acks.len()
    );

    let store = SqliteStore::open(&db).await?;
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
    for ack in &acks {
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
    store.close().await;
    Ok(())
}
