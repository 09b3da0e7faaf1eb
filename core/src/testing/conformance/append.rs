//! Appends: versions, atomicity, expected versions, empty appends (cases 1–5).

#![allow(clippy::wildcard_imports)]

use super::*;

/// Case 1: k events to a new stream get versions 1..k and k positions in one partition, and
/// read back intact.
pub async fn append_to_new_stream_returns_versions_and_positions<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("account", "alice");
    let sent = events(0..3)
        .into_iter()
        .map(|e| e.with_metadata("who", "suite"))
        .collect::<Vec<_>>();
    let cmd = command("open-alice", "open");
    let appended = store
        .append(append(&s, ExpectedVersion::NoStream, sent.clone()).with_command(cmd.clone()))
        .await
        .expect("append to a new stream");
    assert_eq!(appended.first_version, StreamVersion(1));
    assert_eq!(appended.last_version(), StreamVersion(3));
    assert_eq!(appended.offsets.len(), 3);
    assert!(!appended.replayed);
    assert_eq!(
        appended.partition,
        crate::partitioner::partition_for(b"alice", 4),
        "the stream's partition is murmur2(id) mod 4"
    );
    let read = store
        .read_stream(&s, StreamVersion(1))
        .await
        .expect("read the stream");
    assert_eq!(
        read.len(),
        3,
        "read_stream returns exactly the appended events"
    );
    for (i, (record, sent)) in read.iter().zip(&sent).enumerate() {
        assert_eq!(record.version, StreamVersion(i as u64 + 1));
        assert_eq!(record.stream, s);
        assert_eq!(
            record.position,
            appended.positions().nth(i).expect("a position")
        );
        assert_eq!(record.event_type, sent.event_type);
        assert_eq!(record.schema_version, sent.schema_version);
        assert_eq!(record.payload, sent.payload);
        assert_eq!(record.event_id, sent.event_id);
        assert_eq!(record.timestamp, sent.timestamp);
        assert_eq!(record.metadata, sent.metadata);
        assert_eq!(record.command_id.as_ref(), Some(&cmd.id));
    }
    let tail = store
        .read_stream(&s, StreamVersion(3))
        .await
        .expect("read from version 3");
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].version, StreamVersion(3));
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(3)
    );
}

/// Case 2: when one event of an append is invalid, none is written, and the error names it.
pub async fn append_is_atomic<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("account", "atomic");
    let mut bad_name = events(0..3);
    bad_name[1].event_type = "bad type!".into();
    let err = store
        .append(append(&s, ExpectedVersion::Any, bad_name))
        .await
        .expect_err("an event with a bad type name fails the append");
    assert!(
        matches!(
            &err,
            Error::InvalidEvent {
                index: 1,
                reason: InvalidEvent::TypeName(_),
                ..
            }
        ),
        "the error names event 1 and its type name: {err}"
    );
    let mut too_big = events(0..3);
    too_big[2].payload = vec![b' '; limits::MAX_PAYLOAD_BYTES + 1];
    let err = store
        .append(append(&s, ExpectedVersion::Any, too_big))
        .await
        .expect_err("an oversized event fails the append");
    assert!(
        matches!(
            &err,
            Error::InvalidEvent {
                index: 2,
                reason: InvalidEvent::PayloadTooLarge { .. },
                ..
            }
        ),
        "the error names event 2 and its size: {err}"
    );
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(0)
    );
    assert!(
        store
            .read_stream(&s, StreamVersion(1))
            .await
            .expect("read")
            .is_empty()
    );
}

/// Case 3: `Exact` and `NoStream` mismatches are conflicts naming the actual version and
/// write nothing; `Any` always appends.
pub async fn stale_expected_version_is_a_conflict_naming_the_actual_version<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("account", "conflicted");
    store
        .append(append(&s, ExpectedVersion::NoStream, events(0..2)))
        .await
        .expect("first append");
    for expected in [
        ExpectedVersion::Exact(StreamVersion(1)),
        ExpectedVersion::Exact(StreamVersion(3)),
        ExpectedVersion::NoStream,
    ] {
        let err = store
            .append(append(&s, expected, events(10..11)))
            .await
            .expect_err("a stale expectation conflicts");
        match err {
            Error::Conflict {
                stream,
                expected: e,
                actual,
            } => {
                assert_eq!(stream, s);
                assert_eq!(e, expected);
                assert_eq!(
                    actual,
                    StreamVersion(2),
                    "the conflict carries the actual version"
                );
            }
            other => panic!("expected a conflict, got {other}"),
        }
    }
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(2)
    );
    let ok = store
        .append(append(
            &s,
            ExpectedVersion::Exact(StreamVersion(2)),
            events(2..3),
        ))
        .await
        .expect("the right expectation appends");
    assert_eq!(ok.first_version, StreamVersion(3));
    let any = store
        .append(append(&s, ExpectedVersion::Any, events(3..4)))
        .await
        .expect("Any appends");
    assert_eq!(any.first_version, StreamVersion(4));
    let fresh_any = store
        .append(append(
            &stream("account", "new"),
            ExpectedVersion::Any,
            events(0..1),
        ))
        .await
        .expect("Any appends to a new stream");
    assert_eq!(fresh_any.first_version, StreamVersion(1));
}

/// Case 4: 16 tasks appending with `Exact` in a loop end with versions 1..16m, no gap or
/// duplicate, and every loser was told the actual version.
pub async fn concurrent_exact_appenders_leave_no_gap<B: Backend>() {
    const TASKS: u64 = 16;
    const EACH: u64 = 5;
    let (_b, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    let s = stream("account", "contended");
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut expected = store.stream_version(&s).await.expect("version");
            let mut written = 0;
            let mut conflicts = 0u64;
            while written < EACH {
                let n = task * 1000 + written;
                match store
                    .append(append(&s, ExpectedVersion::Exact(expected), vec![event(n)]))
                    .await
                {
                    Ok(a) => {
                        assert_eq!(
                            a.first_version,
                            expected.next(),
                            "a win lands right after the expectation"
                        );
                        expected = a.first_version;
                        written += 1;
                    }
                    Err(Error::Conflict {
                        actual,
                        expected: e,
                        ..
                    }) => {
                        assert_eq!(e, ExpectedVersion::Exact(expected));
                        assert!(
                            actual > expected,
                            "the loser is told a newer actual version ({actual} > {expected})"
                        );
                        assert!(actual.0 <= TASKS * EACH, "the actual version exists");
                        expected = actual;
                        conflicts += 1;
                    }
                    Err(other) => panic!("unexpected error: {other}"),
                }
                tokio::task::yield_now().await;
            }
            conflicts
        }));
    }
    for h in handles {
        h.await.expect("an appender task");
    }
    let read = store.read_stream(&s, StreamVersion(1)).await.expect("read");
    let versions: Vec<u64> = read.iter().map(|r| r.version.0).collect();
    assert_eq!(
        versions,
        (1..=TASKS * EACH).collect::<Vec<_>>(),
        "versions 1..=N, no gap, no duplicate"
    );
    let mut per_task: HashMap<u64, Vec<u64>> = HashMap::new();
    for r in &read {
        let n = n_of(r);
        per_task.entry(n / 1000).or_default().push(n % 1000);
    }
    assert_eq!(per_task.len() as u64, TASKS);
    for (task, ns) in per_task {
        assert_eq!(
            ns,
            (0..EACH).collect::<Vec<_>>(),
            "task {task} wrote each of its events once, in order"
        );
    }
}

/// Case 5: an empty append is rejected and never creates a stream or topic.
pub async fn empty_append_is_rejected_and_creates_nothing<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("ghost", "nobody");
    let err = store
        .append(append(&s, ExpectedVersion::NoStream, Vec::new()))
        .await
        .expect_err("an empty append is rejected");
    assert!(
        matches!(&err, Error::EmptyAppend { stream } if *stream == s),
        "{err}"
    );
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(0)
    );
    let topics = store.topics().await.expect("topics");
    assert!(
        topics.iter().all(|t| t.topic.as_str() != "ghost"),
        "no topic was created: {topics:?}"
    );
}
