//! Conformance case 24 on the real broker: a writer that takes a partition over from a killed
//! one (SIGKILL, mid-run) serves the right versions and remembers the command ids committed
//! before the kill; the command-id window, on both sides, through a takeover; and aggregate
//! snapshots, which name the offset they cover and which a takeover loads.

mod kafka;

use std::sync::Arc;
use std::time::Duration;

use keel::testing::conformance::kafka_bootstrap;
use keel::{
    AppendRequest, CommandId, CommandMeta, EventStore, ExpectedVersion, Fingerprint, NewEvent,
    StreamId, StreamVersion, Topic,
};

use kafka::{
    Ack, builder, check_exactly_once, kill, read_all, spawn_worker, unique_prefix, wait_for_acks,
};

fn retry_of(ack: &Ack) -> anyhow::Result<AppendRequest> {
    Ok(AppendRequest::new(
        StreamId::new("crash", &ack.stream)?,
        ExpectedVersion::Any,
        vec![NewEvent::raw("Tested", 1, b"{}".to_vec())],
    )
    .with_command(CommandMeta::new(
        CommandId::new(&ack.command)?,
        Fingerprint::of_bytes(ack.command.as_bytes()),
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_taking_over_from_a_killed_one_serves_the_right_versions_and_command_ids()
-> anyhow::Result<()> {
    let bootstrap = kafka_bootstrap();
    let prefix = unique_prefix("takeover");
    let mut acks: Vec<Ack> = Vec::new();
    // Each round's worker takes over from the one killed before it.
    for (round, kill_after) in [(0u64, 25usize), (1, 40), (2, 15)] {
        let (child, mut lines) = spawn_worker(&bootstrap, &prefix, round, 1)?;
        wait_for_acks(&mut lines, kill_after, Duration::from_secs(60), &mut acks).await?;
        kill(child, lines, &mut acks).await?;
    }
    assert!(
        acks.len() >= 80,
        "the workers acknowledged {} appends",
        acks.len()
    );

    // A new writer on a fresh machine (an empty local state directory).
    let store = Arc::new(builder(&bootstrap, &prefix).open().await?);
    let topic = Topic::new("crash")?;
    let all = read_all(&store, &topic, 2).await?;
    let records = check_exactly_once(&all, &acks, 3);
    assert!(records >= acks.len() * 3);

    // It serves the right current versions: what the log holds per stream.
    for i in 0..5 {
        let stream = StreamId::new("crash", format!("s{i}"))?;
        let in_log = all
            .values()
            .flatten()
            .filter(|r| r.stream == stream)
            .count() as u64;
        assert_eq!(
            store.stream_version(&stream).await?,
            StreamVersion(in_log),
            "{stream}: the new writer's version is the log's"
        );
        let read = store.read_stream(&stream, StreamVersion(1)).await?;
        assert_eq!(
            read.len() as u64,
            in_log,
            "{stream}: read_stream serves every event"
        );
        let next = store
            .append(AppendRequest::new(
                stream.clone(),
                ExpectedVersion::Exact(StreamVersion(in_log)),
                vec![NewEvent::raw("Tested", 1, b"{}".to_vec())],
            ))
            .await?;
        assert_eq!(
            next.first_version,
            StreamVersion(in_log + 1),
            "{stream}: appends continue"
        );
    }
    // It remembers every command id committed before the kills (within the window): a retry
    // is answered with the first result, and writes nothing.
    for ack in &acks {
        let replay = store.append(retry_of(ack)?).await?;
        assert!(
            replay.replayed,
            "{} is remembered after the takeover",
            ack.command
        );
        assert_eq!(
            replay.offsets.iter().map(|o| o.0).collect::<Vec<_>>(),
            ack.offsets,
            "{}: the first result",
            ack.command
        );
        assert_eq!(replay.first_version, StreamVersion(ack.first_version));
    }
    store.close().await;
    Ok(())
}

/// The window on both sides, through a takeover from a writer-state snapshot (`every` = 1)
/// and from the partition's tail alone (`every` large).
async fn window_on_both_sides(every: u64) -> anyhow::Result<()> {
    const WINDOW: Duration = Duration::from_secs(3);
    let bootstrap = kafka_bootstrap();
    let prefix = unique_prefix(&format!("window{every}"));
    let open = || {
        builder(&bootstrap, &prefix)
            .command_window(WINDOW)
            .writer_snapshot_every(every)
            .default_partitions(1)
            .open()
    };
    let stream = StreamId::new("windowed", "w")?;
    let command = CommandMeta::new(CommandId::new("remember-me")?, Fingerprint::of_bytes(b"x"));
    let request = || {
        AppendRequest::new(
            stream.clone(),
            ExpectedVersion::Any,
            vec![NewEvent::raw("Tested", 1, b"{}".to_vec())],
        )
        .with_command(command.clone())
    };

    let first_store = open().await?;
    let first = first_store.append(request()).await?;
    // Filler appends, so a writer-state snapshot is taken after the command.
    for i in 0..3 {
        first_store
            .append(AppendRequest::new(
                StreamId::new("windowed", format!("other{i}"))?,
                ExpectedVersion::Any,
                vec![NewEvent::raw("Tested", 1, b"{}".to_vec())],
            ))
            .await?;
    }
    let again = first_store.append(request()).await?;
    assert!(
        again.replayed,
        "inside the window, on the writer that committed it"
    );
    // Abandoned, as if its process died: no release, no last writer-state snapshot.
    std::mem::forget(first_store);

    // Inside the window, after a takeover.
    let second_store = open().await?;
    let again = second_store.append(request()).await?;
    assert!(
        again.replayed,
        "inside the window, after a takeover (every = {every})"
    );
    assert_eq!(again.offsets, first.offsets);

    // Wait (for the state, not a fixed time) until the window has passed.
    let deadline = tokio::time::Instant::now() + WINDOW * 10;
    while second_store.command(&stream, &command.id).await?.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the command id was never forgotten"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late = second_store.append(request()).await?;
    assert!(
        !late.replayed,
        "after the window the same id is a new command"
    );
    assert_eq!(late.first_version, StreamVersion(2));
    std::mem::forget(second_store);

    // A takeover after the window remembers the new append, not the forgotten one.
    let third_store = open().await?;
    let remembered = third_store
        .command(&stream, &command.id)
        .await?
        .expect("the recent append of the id is remembered after a takeover");
    assert_eq!(remembered.appended.offsets, late.offsets);
    assert_eq!(third_store.stream_version(&stream).await?, StreamVersion(2));
    third_store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_ids_are_remembered_within_the_window_and_forgotten_after_it_via_snapshots()
-> anyhow::Result<()> {
    window_on_both_sides(1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_ids_are_remembered_within_the_window_and_forgotten_after_it_via_the_tail()
-> anyhow::Result<()> {
    window_on_both_sides(1_000_000).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_local_state_directory_resumes_from_its_checkpoint() -> anyhow::Result<()> {
    let bootstrap = kafka_bootstrap();
    let prefix = unique_prefix("local");
    let dir = tempfile::tempdir()?;
    let open = || {
        builder(&bootstrap, &prefix)
            .state_dir(dir.path())
            .default_partitions(1)
            .open()
    };
    let stream = StreamId::new("kept", "k")?;
    let store = open().await?;
    for _ in 0..5 {
        store
            .append(AppendRequest::new(
                stream.clone(),
                ExpectedVersion::Any,
                vec![NewEvent::raw("Tested", 1, b"{}".to_vec())],
            ))
            .await?;
    }
    store.close().await;
    // Another writer appends meanwhile (its own, empty local state).
    let other = builder(&bootstrap, &prefix)
        .default_partitions(1)
        .open()
        .await?;
    other
        .append(AppendRequest::new(
            stream.clone(),
            ExpectedVersion::Exact(StreamVersion(5)),
            vec![NewEvent::raw("Tested", 1, b"{}".to_vec())],
        ))
        .await?;
    other.close().await;
    // The first directory catches up from its checkpoint: it sees the other's append.
    let store = open().await?;
    assert_eq!(store.stream_version(&stream).await?, StreamVersion(6));
    let read = store.read_stream(&stream, StreamVersion(1)).await?;
    assert_eq!(
        read.iter().map(|r| r.version.0).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    store.close().await;
    Ok(())
}

/// Aggregate snapshots on Kafka: in the compacted snapshots topic, keyed by stream id, with
/// the offset of the event they cover; a takeover on a fresh machine loads from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_snapshot_names_the_offset_it_covers_and_a_takeover_loads_it()
-> anyhow::Result<()> {
    use bank::{Account, AccountCommand};
    use keel::Repository;
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::Headers as _;

    let bootstrap = kafka_bootstrap();
    let prefix = unique_prefix("snapshots");
    let open = || builder(&bootstrap, &prefix).default_partitions(1).open();
    let first = Arc::new(open().await?);
    let accounts = Repository::<Account, _>::new(Arc::clone(&first)).snapshot_every(5);
    accounts
        .execute(
            "snap",
            AccountCommand::Open {
                owner: "Sam".into(),
                overdraft_limit: 0,
            },
        )
        .await?;
    for amount in 1..=6 {
        accounts
            .execute("snap", AccountCommand::Deposit { amount })
            .await?;
    }
    let stream = StreamId::new("account", "snap")?;
    let saved = first
        .load_snapshot(&stream)
        .await?
        .ok_or_else(|| anyhow::anyhow!("a snapshot was saved"))?;
    assert!(saved.version >= StreamVersion(5), "{:?}", saved.version);
    let events = first.read_stream(&stream, StreamVersion(1)).await?;
    let covered = events
        .iter()
        .find(|r| r.version == saved.version)
        .map(|r| r.offset())
        .ok_or_else(|| anyhow::anyhow!("the covered event"))?;
    // Abandoned, as if its process died.
    std::mem::forget(accounts);
    std::mem::forget(first);

    // A takeover on a fresh machine (empty local state) loads it from the compacted topic.
    let second = Arc::new(open().await?);
    let loaded = second
        .load_snapshot(&stream)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the takeover loads the snapshot"))?;
    assert_eq!(loaded.version, saved.version);
    assert_eq!(loaded.payload, saved.payload);
    let state = Repository::<Account, _>::new(Arc::clone(&second))
        .load("snap")
        .await?;
    assert_eq!(state.state.balance(), 21);
    assert_eq!(state.version, StreamVersion(7));

    // The record says which offset it covers.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("{prefix}raw"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(
        &format!("{prefix}account.keel-snapshots"),
        0,
        rdkafka::Offset::Beginning,
    )?;
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let header = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot record read"
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        let version = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "keel.version"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        if version.as_deref() != Some(saved.version.to_string().as_str()) {
            continue;
        }
        assert_eq!(message.key(), Some("snap".as_bytes()), "keyed by stream id");
        break message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "keel.offset"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned());
    };
    assert_eq!(header, Some(covered.to_string()));
    second.close().await;
    Ok(())
}
