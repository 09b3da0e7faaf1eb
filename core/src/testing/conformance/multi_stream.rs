//! Atomic appends to several streams ([`EventStore::append_all`]), where the backend says it
//! can ([`Capabilities::multi_stream_append`](crate::store::Capabilities)); where it cannot,
//! each case checks the weaker promise instead: the call is refused with
//! [`Error::Unsupported`] and nothing is written.

#![allow(clippy::wildcard_imports)]

use super::*;

/// Whether the store does atomic multi-stream appends; when it does not, checks that
/// `append_all` refuses and writes nothing to `streams`.
async fn supported_or_refused<S: EventStore>(store: &S, streams: &[&StreamId]) -> bool {
    if store.capabilities().multi_stream_append {
        return true;
    }
    let requests = streams
        .iter()
        .map(|s| append(s, ExpectedVersion::Any, events(0..1)))
        .collect();
    let err = store
        .append_all(requests)
        .await
        .expect_err("a backend without multi_stream_append refuses append_all");
    assert!(
        matches!(err, Error::Unsupported { .. }),
        "a backend without multi_stream_append says so: {err}"
    );
    for s in streams {
        assert_eq!(
            store.stream_version(s).await.expect("version"),
            StreamVersion(0),
            "a refused append_all writes nothing to {s}"
        );
    }
    false
}

/// Appends to two new streams in one call: both get versions and positions, and read back.
pub async fn multi_stream_append_writes_every_stream<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let (a, b) = (stream("account", "ms-a"), stream("account", "ms-b"));
    if !supported_or_refused(&store, &[&a, &b]).await {
        return;
    }
    let appended = store
        .append_all(vec![
            append(&a, ExpectedVersion::NoStream, events(0..2)),
            append(&b, ExpectedVersion::NoStream, events(2..3)),
        ])
        .await
        .expect("append to two new streams");
    assert_eq!(appended.len(), 2, "one result per append, in order");
    assert_eq!(appended[0].stream, a);
    assert_eq!(appended[0].last_version(), StreamVersion(2));
    assert_eq!(appended[1].stream, b);
    assert_eq!(appended[1].last_version(), StreamVersion(1));
    for result in &appended {
        let read = store
            .read_stream(&result.stream, StreamVersion(1))
            .await
            .expect("read back");
        let positions: Vec<_> = result.positions().collect();
        let read_positions: Vec<_> = read.iter().map(|r| r.position.clone()).collect();
        assert_eq!(
            read_positions, positions,
            "each stream reads back at the positions its result names"
        );
    }
    let nothing = store.append_all(Vec::new()).await.expect("an empty call");
    assert!(nothing.is_empty(), "an empty call writes nothing");
}

/// A stale expected version on one stream refuses the whole call: the conflict names that
/// stream and the other stream is unchanged.
pub async fn multi_stream_conflict_on_one_stream_writes_nothing<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let (a, b) = (stream("account", "mc-a"), stream("account", "mc-b"));
    if !supported_or_refused(&store, &[&a, &b]).await {
        return;
    }
    store
        .append(append(&b, ExpectedVersion::NoStream, events(0..2)))
        .await
        .expect("b at version 2");
    let err = store
        .append_all(vec![
            append(&a, ExpectedVersion::NoStream, events(0..1)),
            append(&b, ExpectedVersion::Exact(StreamVersion(1)), events(1..2)),
        ])
        .await
        .expect_err("a stale expectation on b refuses the call");
    match &err {
        Error::Conflict { stream, actual, .. } => {
            assert_eq!(stream, &b, "the conflict names the stale stream");
            assert_eq!(*actual, StreamVersion(2));
        }
        other => panic!("expected a conflict on b, got {other}"),
    }
    assert_eq!(
        store.stream_version(&a).await.expect("version"),
        StreamVersion(0),
        "nothing of the refused call reached a"
    );
    assert!(
        store
            .read_stream(&a, StreamVersion(1))
            .await
            .expect("read")
            .is_empty()
    );
    // The refused call left no trace in the ledger: the same call with the right version
    // goes through, and a's partition has no gap before its record.
    let ok = store
        .append_all(vec![
            append(&a, ExpectedVersion::NoStream, events(0..1)),
            append(&b, ExpectedVersion::Exact(StreamVersion(2)), events(1..2)),
        ])
        .await
        .expect("the corrected call");
    assert_eq!(ok[0].first_version, StreamVersion(1));
    assert_eq!(ok[1].first_version, StreamVersion(3));
    if store.capabilities().dense_offsets {
        let head = store
            .read_partition(a.topic(), ok[0].partition, Offset(0), 1000)
            .await
            .expect("read a's partition");
        let offsets: Vec<u64> = head.iter().map(|r| r.offset().0).collect();
        let dense: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(
            offsets, dense,
            "a refused call leaves no hole in the offsets"
        );
    }
}

/// A call retried with the same command ids writes nothing again and returns the first
/// results; a command id reused with another fingerprint refuses the whole call.
pub async fn multi_stream_append_is_idempotent<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let (a, b) = (stream("account", "mi-a"), stream("account", "mi-b"));
    if !supported_or_refused(&store, &[&a, &b]).await {
        return;
    }
    let call = || {
        vec![
            append(&a, ExpectedVersion::NoStream, events(0..1))
                .with_command(command("t1-out", "out")),
            append(&b, ExpectedVersion::NoStream, events(1..2))
                .with_command(command("t1-in", "in")),
        ]
    };
    let first = store.append_all(call()).await.expect("first call");
    assert!(first.iter().all(|r| !r.replayed));
    let again = store
        .append_all(call())
        .await
        .expect("the retry is answered");
    assert!(again.iter().all(|r| r.replayed), "both appends replay");
    for (x, y) in first.iter().zip(&again) {
        assert_eq!(x.offsets, y.offsets);
        assert_eq!(x.first_version, y.first_version);
    }
    let reused = store
        .append_all(vec![
            append(&a, ExpectedVersion::Any, events(2..3)).with_command(command("t2-out", "out")),
            append(&b, ExpectedVersion::Any, events(3..4))
                .with_command(command("t1-in", "another command")),
        ])
        .await
        .expect_err("a reused command id refuses the call");
    assert!(matches!(reused, Error::CommandIdReused { .. }), "{reused}");
    assert_eq!(
        store.stream_version(&a).await.expect("version"),
        StreamVersion(1),
        "the other append of the refused call was not written"
    );
    assert!(
        store
            .command(&a, &CommandId::new("t2-out").expect("id"))
            .await
            .expect("command")
            .is_none(),
        "the refused call recorded no command id"
    );
}

/// 16 tasks move "money" between 4 streams with two-stream appends at exact versions, in a
/// loop: every committed call wrote both of its events, none wrote one without the other.
pub async fn concurrent_multi_stream_appends_are_all_or_nothing<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let streams: Vec<StreamId> = (0..4)
        .map(|i| stream("account", &format!("mx-{i}")))
        .collect();
    let refs: Vec<&StreamId> = streams.iter().collect();
    if !supported_or_refused(&store, &refs).await {
        return;
    }
    let store = Arc::new(store);
    let committed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..16u64)
        .map(|t| {
            let (store, streams, committed) =
                (Arc::clone(&store), streams.clone(), Arc::clone(&committed));
            tokio::spawn(async move {
                let mut done = 0;
                let mut i = 0u64;
                while done < 5 {
                    i += 1;
                    let from = &streams[((t + i) % 4) as usize];
                    let to = &streams[((t + i + 1) % 4) as usize];
                    let (vf, vt) = (
                        store.stream_version(from).await.expect("version"),
                        store.stream_version(to).await.expect("version"),
                    );
                    let n = t * 1000 + i;
                    match store
                        .append_all(vec![
                            append(from, ExpectedVersion::Exact(vf), events(n..n + 1)),
                            append(to, ExpectedVersion::Exact(vt), events(n..n + 1)),
                        ])
                        .await
                    {
                        Ok(_) => {
                            done += 1;
                            committed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) if e.is_conflict() => {}
                        Err(e) => panic!("append_all failed: {e}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for s in &streams {
        let records = store.read_stream(s, StreamVersion(1)).await.expect("read");
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.version, StreamVersion(i as u64 + 1), "no gap in {s}");
            *seen.entry(n_of(r)).or_default() += 1;
        }
    }
    assert_eq!(
        seen.len() as u64,
        committed.load(std::sync::atomic::Ordering::Relaxed),
        "one pair of events per committed call"
    );
    assert!(
        seen.values().all(|&n| n == 2),
        "every committed call wrote both of its events, never one"
    );
}
