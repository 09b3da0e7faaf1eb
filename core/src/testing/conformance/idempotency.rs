//! Idempotency by `(stream, command id)` with fingerprints (cases 6–11).

#![allow(clippy::wildcard_imports)]

use super::*;

/// Case 6: the same `(stream, command id)` and fingerprint writes once; the second call
/// returns the first call's versions and positions.
pub async fn duplicate_command_id_appends_nothing<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("account", "dup");
    let cmd = command("cmd-1", "deposit 5");
    let first = store
        .append(append(&s, ExpectedVersion::NoStream, events(0..2)).with_command(cmd.clone()))
        .await
        .expect("first append");
    let second = store
        .append(append(&s, ExpectedVersion::NoStream, events(0..2)).with_command(cmd.clone()))
        .await
        .expect("the retry is answered, not refused");
    assert!(second.replayed, "the retry is marked as replayed");
    assert_eq!(second.first_version, first.first_version);
    assert_eq!(second.offsets, first.offsets);
    assert_eq!(second.partition, first.partition);
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(2),
        "nothing new written"
    );
    let head = store.head(s.topic(), first.partition).await.expect("head");
    if store.capabilities().dense_offsets {
        assert_eq!(head, first.offsets[1].next(), "the partition did not grow");
    } else {
        assert!(head > first.offsets[1], "the head is past the first append");
        let after = store
            .read_partition(s.topic(), first.partition, first.offsets[1].next(), 10)
            .await
            .expect("read after the first append");
        assert!(after.is_empty(), "the partition did not grow: {after:?}");
    }
    let stored = store
        .command(&s, &cmd.id)
        .await
        .expect("command")
        .expect("the command is recorded");
    assert_eq!(stored.fingerprint, cmd.fingerprint);
    assert_eq!(stored.appended.offsets, first.offsets);
}

/// Case 7: a committed command's retry returns the first result even after the stream moved
/// on and with a stale expectation: no conflict for a committed command.
pub async fn committed_command_replays_even_when_stale<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("account", "moved");
    let cmd = command("cmd-7", "x");
    let first = store
        .append(append(&s, ExpectedVersion::NoStream, events(0..1)).with_command(cmd.clone()))
        .await
        .expect("first append");
    store
        .append(append(
            &s,
            ExpectedVersion::Exact(StreamVersion(1)),
            events(1..3),
        ))
        .await
        .expect("move on");
    let retry = store
        .append(append(&s, ExpectedVersion::NoStream, events(0..1)).with_command(cmd))
        .await
        .expect("a stale retry of a committed command is answered");
    assert!(retry.replayed);
    assert_eq!(retry.first_version, first.first_version);
    assert_eq!(retry.offsets, first.offsets);
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(3)
    );
}

/// Case 8: the same command id with another fingerprint is `CommandIdReused` and writes
/// nothing.
pub async fn reused_command_id_with_another_fingerprint_is_refused<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("account", "reuse");
    store
        .append(
            append(&s, ExpectedVersion::Any, events(0..1)).with_command(command("c", "deposit 5")),
        )
        .await
        .expect("first append");
    let err = store
        .append(
            append(&s, ExpectedVersion::Any, events(1..2)).with_command(command("c", "deposit 6")),
        )
        .await
        .expect_err("another command under the same id is refused");
    assert!(
        matches!(&err, Error::CommandIdReused { stream, command_id } if *stream == s && command_id.as_str() == "c"),
        "{err}"
    );
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(1),
        "nothing written"
    );
}

/// Case 9: the same command id on two streams is two independent commands.
pub async fn same_command_id_on_two_streams_is_two_commands<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let a = stream("account", "a");
    let b = stream("account", "b");
    let cmd = command("shared-id", "same");
    let ra = store
        .append(append(&a, ExpectedVersion::Any, events(0..1)).with_command(cmd.clone()))
        .await
        .expect("append to a");
    let rb = store
        .append(append(&b, ExpectedVersion::Any, events(0..2)).with_command(cmd.clone()))
        .await
        .expect("append to b");
    assert!(!ra.replayed && !rb.replayed, "both commands were written");
    assert_eq!(
        store.stream_version(&a).await.expect("version"),
        StreamVersion(1)
    );
    assert_eq!(
        store.stream_version(&b).await.expect("version"),
        StreamVersion(2)
    );
    let other_fingerprint = command("shared-id", "different");
    let rc = store
        .append(
            append(&stream("account", "c"), ExpectedVersion::Any, events(0..1))
                .with_command(other_fingerprint),
        )
        .await
        .expect("a third stream does not see the other streams' fingerprints");
    assert!(!rc.replayed);
}

/// Case 10: 16 concurrent sends of one command id write one set of events, and all 16 get
/// the same answer.
pub async fn concurrent_duplicate_commands_write_once<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    let s = stream("account", "stampede");
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut handles = Vec::new();
    for _ in 0..16 {
        let (store, s, barrier) = (Arc::clone(&store), s.clone(), Arc::clone(&barrier));
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .append(
                    append(&s, ExpectedVersion::NoStream, events(0..3))
                        .with_command(command("once", "f")),
                )
                .await
                .expect("every duplicate gets an answer")
        }));
    }
    let mut answers: Vec<Appended> = Vec::new();
    for h in handles {
        answers.push(h.await.expect("task"));
    }
    let writers = answers.iter().filter(|a| !a.replayed).count();
    assert_eq!(writers, 1, "exactly one call wrote");
    for a in &answers {
        assert_eq!(a.first_version, answers[0].first_version);
        assert_eq!(
            a.offsets, answers[0].offsets,
            "all 16 got the same positions"
        );
    }
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(3)
    );
    assert_eq!(
        store
            .read_stream(&s, StreamVersion(1))
            .await
            .expect("read")
            .len(),
        3
    );
}

/// Case 11: after closing and reopening, a committed command still replays, another
/// fingerprint is still refused. A non-durable backend states it and starts empty.
pub async fn idempotency_survives_reopening<B: Backend>() {
    let (backend, store) = fresh::<B>(4).await;
    let durable = store.capabilities().durable;
    let s = stream("account", "durable");
    let cmd = command("persisted", "f1");
    let first = store
        .append(append(&s, ExpectedVersion::NoStream, events(0..2)).with_command(cmd.clone()))
        .await
        .expect("first append");
    backend.close(store).await;
    let store = backend.open().await;
    if !durable {
        assert_eq!(
            store.stream_version(&s).await.expect("version"),
            StreamVersion(0),
            "a backend that says it is not durable starts empty"
        );
        return;
    }
    let again = store
        .append(append(&s, ExpectedVersion::NoStream, events(0..2)).with_command(cmd))
        .await
        .expect("the retry after reopening is answered");
    assert!(again.replayed);
    assert_eq!(again.offsets, first.offsets);
    assert_eq!(again.first_version, first.first_version);
    let err = store
        .append(
            append(&s, ExpectedVersion::Any, events(0..1)).with_command(command("persisted", "f2")),
        )
        .await
        .expect_err("another fingerprint is still refused after reopening");
    assert!(matches!(err, Error::CommandIdReused { .. }), "{err}");
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(2)
    );
    backend.close(store).await;
}
