//! Reading partitions: order, density, tails, partitioning, topic shapes (cases 12–17).

#![allow(clippy::wildcard_imports)]

use super::*;

async fn fill_one_partition<S: EventStore>(
    store: &S,
    kind: &str,
    streams: u64,
    each: u64,
) -> Topic {
    let topic = Topic::new(kind).expect("topic");
    store
        .ensure_topic(&topic, 1)
        .await
        .expect("create a one-partition topic");
    for round in 0..each {
        for i in 0..streams {
            store
                .append(append(
                    &stream(kind, &format!("s{i}")),
                    ExpectedVersion::Any,
                    vec![event(i * 100 + round)],
                ))
                .await
                .expect("append");
        }
    }
    topic
}

/// Case 12: reading a partition from 0 yields every record in strictly increasing offset
/// order, each once; from the offset after any record, exactly the rest.
pub async fn read_partition_yields_every_record_once_in_order<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let topic = fill_one_partition(&store, "ledger", 4, 5).await;
    let p = Partition(0);
    let mut all = Vec::new();
    let mut from = Offset(0);
    loop {
        let page = store
            .read_partition(&topic, p, from, 7)
            .await
            .expect("read a page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7, "the limit is honoured");
        from = page.last().expect("non-empty").offset().next();
        all.extend(page);
    }
    assert_eq!(all.len(), 20, "every committed record, once");
    assert!(
        all.windows(2).all(|w| w[0].offset() < w[1].offset()),
        "strictly increasing offsets"
    );
    let head = store.head(&topic, p).await.expect("head");
    if store.capabilities().dense_offsets {
        assert_eq!(head, all[19].offset().next());
    } else {
        // Offsets skip transaction markers: the head is past the last record, and nothing
        // is there yet.
        assert!(
            head > all[19].offset(),
            "head {head} is past the last record"
        );
        let beyond = store
            .read_partition(&topic, p, head, 10)
            .await
            .expect("read from the head");
        assert!(beyond.is_empty(), "nothing at or past the head: {beyond:?}");
    }
    for (i, record) in all.iter().enumerate() {
        let rest = store
            .read_partition(&topic, p, record.offset().next(), 100)
            .await
            .expect("read the rest");
        assert_eq!(
            rest,
            all[i + 1..].to_vec(),
            "reading after offset {} yields exactly the rest",
            record.offset()
        );
    }
    let err = store
        .read_partition(&topic, Partition(1), Offset(0), 1)
        .await
        .expect_err("partition 1 of 1");
    assert!(
        matches!(err, Error::UnknownPartition { partitions: 1, .. }),
        "{err}"
    );
}

/// Case 13 (SQL): offsets are dense from 0 in commit order. Backends without dense offsets
/// (Kafka) promise strictly increasing offsets instead, which this checks.
pub async fn offsets_are_dense_in_commit_order<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let dense = store.capabilities().dense_offsets;
    let topic = Topic::new("dense").expect("topic");
    store.ensure_topic(&topic, 2).await.expect("topic");
    let mut acked: BTreeMap<u32, Vec<Offset>> = BTreeMap::new();
    for i in 0..30u64 {
        let a = store
            .append(append(
                &stream("dense", &format!("d{}", i % 7)),
                ExpectedVersion::Any,
                events(i..i + 1 + i % 3),
            ))
            .await
            .expect("append");
        acked.entry(a.partition.0).or_default().extend(a.offsets);
    }
    for (p, offsets) in acked {
        let read: Vec<Offset> = store
            .read_partition(&topic, Partition(p), Offset(0), 1000)
            .await
            .expect("read")
            .iter()
            .map(crate::RecordedEvent::offset)
            .collect();
        assert_eq!(
            read, offsets,
            "partition {p} holds the acknowledged offsets in commit order"
        );
        if dense {
            assert_eq!(
                read,
                (0..read.len() as u64).map(Offset).collect::<Vec<_>>(),
                "dense from 0"
            );
        } else {
            assert!(read.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        }
    }
}

/// Case 14: a reader tailing a partition while 8 tasks append concurrently sees every event
/// once, in offset order, with no gap in any stream's versions.
pub async fn tail_sees_every_concurrent_append_once_in_order<B: Backend>() {
    const TASKS: u64 = 8;
    const EACH: u64 = 25;
    let (_b, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    let topic = Topic::new("tailed").expect("topic");
    store.ensure_topic(&topic, 1).await.expect("topic");
    let tail = Arc::clone(&store).tail(topic, Partition(0), Offset(0));
    let reader = tokio::spawn(async move {
        tail.take((TASKS * EACH) as usize)
            .map(|r| r.expect("the tail yields records"))
            .collect::<Vec<_>>()
            .await
    });
    let mut writers = Vec::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                store
                    .append(append(
                        &stream("tailed", &format!("w{t}")),
                        ExpectedVersion::Any,
                        vec![event(t * 1000 + i)],
                    ))
                    .await
                    .expect("append");
                if i % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the tail caught up within 30 s")
        .expect("reader task");
    assert!(
        seen.windows(2).all(|w| w[0].offset() < w[1].offset()),
        "offset order, no repeat"
    );
    let mut versions: HashMap<StreamId, Vec<u64>> = HashMap::new();
    for r in &seen {
        versions
            .entry(r.stream.clone())
            .or_default()
            .push(r.version.0);
    }
    assert_eq!(versions.len() as u64, TASKS);
    for (s, v) in versions {
        assert_eq!(
            v,
            (1..=EACH).collect::<Vec<_>>(),
            "stream {s}: every version once, in order"
        );
    }
}

/// Case 15 (SQL): an append transaction held open (by another connection, as another process
/// would) while later appends to the same partition go on never lets a tailing reader skip it:
/// the reader sees every record once, in offset order, the held one included.
///
/// A backend that assigns offsets from a sequence fails this: the later appends commit around
/// the hole, the reader reads past it, and the held record appears behind the reader. A backend
/// with no transaction to hold ([`Backend::hold_append`] is `None`) is checked for the weaker
/// promise: a tail sees concurrent appends once, in order.
pub async fn held_open_append_never_lets_a_tail_skip<B: Backend>() {
    const WRITERS: u64 = 4;
    const EACH: u64 = 10;
    const WARM: u64 = 2;
    let (backend, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    let dense = store.capabilities().dense_offsets;
    let topic = Topic::new("held").expect("topic");
    store.ensure_topic(&topic, 1).await.expect("topic");
    store
        .append(append(
            &stream("held", "warm"),
            ExpectedVersion::NoStream,
            events(0..WARM),
        ))
        .await
        .expect("warm-up append");

    let late = stream("held", "late");
    let held_event = event(999);
    let held = backend
        .hold_append(&store, &late, Partition(0), &held_event)
        .await;
    let total = WARM + u64::from(held.is_some()) + WRITERS * EACH;

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tail = Arc::clone(&store).tail(topic.clone(), Partition(0), Offset(0));
    let reader = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut tail = tail.take(total as usize);
            while let Some(record) = tail.next().await {
                seen.lock()
                    .expect("the reader's list")
                    .push(record.expect("the tail yields records"));
            }
        })
    };
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, acked) = (Arc::clone(&store), Arc::clone(&acked));
            tokio::spawn(async move {
                for i in 0..EACH {
                    store
                        .append(append(
                            &stream("held", &format!("w{w}")),
                            ExpectedVersion::Exact(StreamVersion(i)),
                            vec![event(w * 100 + i)],
                        ))
                        .await
                        .expect("append");
                    acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();

    if let Some(mut held) = held {
        // Wait until the later appends are blocked behind the held transaction, or (a backend
        // that lets them commit around it) until some have committed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while held.waiting().await == 0 && acked.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no append reached the store within 30 s while a transaction was held"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Appends that committed around the hole: give the reader its chance to read past it
        // before the held record commits.
        let committed = acked.load(std::sync::atomic::Ordering::SeqCst);
        if committed > 0 {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while (seen.lock().expect("list").len() as u64) < WARM + committed
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        held.commit().await;
    }
    for w in writers {
        w.await.expect("writer");
    }
    tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the tail did not reach {total} records within 30 s: it skipped one (read past \
                 the held record before it committed) or the store is stuck"
            )
        })
        .expect("reader task");

    let seen = std::mem::take(&mut *seen.lock().expect("list"));
    assert_eq!(seen.len() as u64, total, "every record once");
    assert!(
        seen.windows(2).all(|w| w[0].offset() < w[1].offset()),
        "offset order, no repeat"
    );
    if dense {
        let offsets: Vec<u64> = seen.iter().map(|r| r.offset().0).collect();
        assert_eq!(
            offsets,
            (0..total).collect::<Vec<_>>(),
            "dense offsets in commit order"
        );
    }
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &seen {
        versions
            .entry(r.stream.id().to_owned())
            .or_default()
            .push(r.version.0);
    }
    if total > WARM + WRITERS * EACH {
        assert_eq!(
            versions.get("late"),
            Some(&vec![1]),
            "the held record was seen, once"
        );
        assert_eq!(
            seen.iter().find(|r| r.stream == late).map(|r| r.event_id),
            Some(held_event.event_id)
        );
    }
    assert_eq!(versions.get("warm"), Some(&(1..=WARM).collect::<Vec<_>>()));
    for w in 0..WRITERS {
        assert_eq!(
            versions.get(&format!("w{w}")),
            Some(&(1..=EACH).collect::<Vec<_>>()),
            "stream w{w} has every version once, in order"
        );
    }
}

/// Case 16: a stream lands in partition `murmur2(id) mod N`, as Kafka's Java client puts a
/// keyed record (reference values from Kafka 4.1.1).
pub async fn streams_land_in_their_murmur2_partition<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let six = Topic::new("six").expect("topic");
    let eight = Topic::new("eight").expect("topic");
    store.ensure_topic(&six, 6).await.expect("topic of 6");
    store.ensure_topic(&eight, 8).await.expect("topic of 8");
    // (key, partition of 6, partition of 8); the empty key and "héllo" are not valid stream
    // ids and are covered by the partitioner's unit test.
    let cases = [
        ("a", 4, 4),
        ("21", 0, 4),
        ("foobar", 0, 6),
        ("account-1", 2, 4),
        ("acc-42", 1, 5),
        ("0192f0c4-7a1e-7c3b-9d2e-5f6a7b8c9d0e", 5, 1),
    ];
    for (key, of6, of8) in cases {
        for (kind, want) in [("six", of6), ("eight", of8)] {
            let s = stream(kind, key);
            let a = store
                .append(append(&s, ExpectedVersion::Any, events(0..1)))
                .await
                .expect("append");
            assert_eq!(a.partition, Partition(want), "{key:?} in topic {kind}");
            let again = store
                .append(append(&s, ExpectedVersion::Any, events(1..2)))
                .await
                .expect("append");
            assert_eq!(
                again.partition, a.partition,
                "a stream always lands in the same partition"
            );
            let records = store
                .read_partition(s.topic(), Partition(want), Offset(0), 1000)
                .await
                .expect("read");
            assert_eq!(records.iter().filter(|r| r.stream == s).count(), 2);
        }
    }
}

/// Case 17: opening an existing topic with another partition count is an error naming both.
pub async fn reopening_a_topic_with_another_partition_count_fails<B: Backend>() {
    let (backend, store) = fresh::<B>(4).await;
    let topic = Topic::new("fixed").expect("topic");
    let info = store.ensure_topic(&topic, 3).await.expect("create");
    assert_eq!(info.partitions, 3);
    store
        .ensure_topic(&topic, 3)
        .await
        .expect("the same count is fine");
    let err = store
        .ensure_topic(&topic, 5)
        .await
        .expect_err("another count is refused");
    assert!(
        matches!(
            err,
            Error::PartitionCount {
                existing: 3,
                requested: 5,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains('3') && text.contains('5'),
        "the message names both counts: {text}"
    );
    // A topic created by an append has the default count, and keeps it.
    store
        .append(append(
            &stream("auto", "x"),
            ExpectedVersion::Any,
            events(0..1),
        ))
        .await
        .expect("append creates the topic");
    let auto = Topic::new("auto").expect("topic");
    let err = store
        .ensure_topic(&auto, 7)
        .await
        .expect_err("the default count is stored");
    assert!(
        matches!(
            err,
            Error::PartitionCount {
                existing: 4,
                requested: 7,
                ..
            }
        ),
        "{err}"
    );
    if store.capabilities().durable {
        backend.close(store).await;
        let store = backend.open().await;
        let err = store
            .ensure_topic(&topic, 5)
            .await
            .expect_err("the count survives reopening");
        assert!(
            matches!(
                err,
                Error::PartitionCount {
                    existing: 3,
                    requested: 5,
                    ..
                }
            ),
            "{err}"
        );
        backend.close(store).await;
    }
}
