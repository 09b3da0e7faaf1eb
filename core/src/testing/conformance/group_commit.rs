//! Group commit: shared transactions, independent answers (cases 18–19).

#![allow(clippy::wildcard_imports)]

use super::*;

/// Case 18: 64 concurrent appenders each get their own result, and a group-committing store
/// commits fewer transactions than appends.
pub async fn concurrent_appenders_share_commits<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    store
        .append(append(
            &stream("warm", "up"),
            ExpectedVersion::Any,
            events(0..1),
        ))
        .await
        .expect("warm up");
    let before = store.stats();
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let mut handles = Vec::new();
    for i in 0..64u64 {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        handles.push(tokio::spawn(async move {
            let s = stream("crowd", &format!("c{i}"));
            barrier.wait().await;
            let a = store
                .append(append(&s, ExpectedVersion::NoStream, events(i..i + 1)))
                .await
                .expect("append");
            (s, i, a)
        }));
    }
    for h in handles {
        let (s, i, a) = h.await.expect("task");
        assert_eq!(a.stream, s, "each caller gets its own result");
        assert_eq!(a.first_version, StreamVersion(1));
        let read = store.read_stream(&s, StreamVersion(1)).await.expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(n_of(&read[0]), i, "each caller's own event was written");
    }
    let after = store.stats();
    let commits = after.commits - before.commits;
    if store.capabilities().group_commit {
        assert!(
            commits < 64,
            "64 appends shared commits: {commits} transactions"
        );
    } else {
        assert_eq!(
            commits, 64,
            "a store without group commit commits each append"
        );
    }
}

/// Case 19: among concurrent callers, a stale expectation gets its conflict, an oversized
/// event its error, a reused command id its refusal, and everyone else succeeds.
pub async fn one_bad_caller_does_not_fail_the_others<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    let existing = stream("mixed", "existing");
    store
        .append(
            append(&existing, ExpectedVersion::NoStream, events(0..1))
                .with_command(command("used", "a")),
        )
        .await
        .expect("set up");
    let barrier = Arc::new(tokio::sync::Barrier::new(33));
    let mut handles = Vec::new();
    for i in 0..33u64 {
        let (store, barrier, existing) =
            (Arc::clone(&store), Arc::clone(&barrier), existing.clone());
        handles.push(tokio::spawn(async move {
            let request = match i {
                0 => append(&existing, ExpectedVersion::NoStream, events(0..1)),
                1 => {
                    let mut evs = events(0..2);
                    evs[1].payload = vec![b'x'; limits::MAX_PAYLOAD_BYTES + 1];
                    append(&stream("mixed", "big"), ExpectedVersion::Any, evs)
                }
                2 => append(&existing, ExpectedVersion::Any, events(0..1))
                    .with_command(command("used", "b")),
                _ => append(
                    &stream("mixed", &format!("ok{i}")),
                    ExpectedVersion::NoStream,
                    events(i..i + 2),
                ),
            };
            barrier.wait().await;
            (i, store.append(request).await)
        }));
    }
    for h in handles {
        match h.await.expect("task") {
            (0, r) => assert!(
                matches!(
                    r,
                    Err(Error::Conflict {
                        actual: StreamVersion(1),
                        ..
                    })
                ),
                "{r:?}"
            ),
            (1, r) => assert!(
                matches!(r, Err(Error::InvalidEvent { index: 1, .. })),
                "{r:?}"
            ),
            (2, r) => assert!(matches!(r, Err(Error::CommandIdReused { .. })), "{r:?}"),
            (i, r) => {
                let a = r.unwrap_or_else(|e| panic!("caller {i} failed: {e}"));
                assert_eq!(a.offsets.len(), 2);
            }
        }
    }
    assert_eq!(
        store.stream_version(&existing).await.expect("version"),
        StreamVersion(1)
    );
    assert_eq!(
        store
            .stream_version(&stream("mixed", "big"))
            .await
            .expect("version"),
        StreamVersion(0)
    );
}
