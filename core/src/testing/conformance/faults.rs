//! Bad records, bad input and durability (cases 20–22).

#![allow(clippy::wildcard_imports)]

use super::*;

/// Case 21: a stored payload that no longer decodes, or an unknown type, is a typed error
/// naming topic, partition, offset, stream and type; other records still read.
pub async fn undecodable_records_are_typed_errors_naming_where<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("legacy", "old-1");
    let evs = vec![
        event(1),
        NewEvent::raw("Tested", 1, br#"{"n":"not a number"}"#.to_vec()),
        NewEvent::raw("Retired", 1, b"{}".to_vec()),
        event(4),
    ];
    store
        .append(append(&s, ExpectedVersion::NoStream, evs))
        .await
        .expect("append");
    let records = store
        .read_stream(&s, StreamVersion(1))
        .await
        .expect("reading does not decode payloads");
    assert_eq!(records.len(), 4);
    assert_eq!(
        records[0].decode::<Probe>().expect("fine"),
        Probe::Tested { n: 1 }
    );
    assert_eq!(
        records[3].decode::<Probe>().expect("fine"),
        Probe::Tested { n: 4 }
    );
    for (record, unknown) in [(&records[1], false), (&records[2], true)] {
        let err = record.decode::<Probe>().expect_err("does not decode");
        assert_eq!(
            err.position.as_ref(),
            Some(&record.position),
            "names the position"
        );
        assert_eq!(
            err.stream.as_ref().map(|(s, v)| (s.clone(), *v)),
            Some((s.clone(), record.version))
        );
        assert_eq!(err.event_type, record.event_type);
        match (&err.kind, unknown) {
            (DecodeErrorKind::UnknownType { known }, true) => assert!(known.contains("Tested")),
            (DecodeErrorKind::Payload(_), false) => {}
            (kind, _) => panic!("wrong kind of error: {kind}"),
        }
        let text = err.to_string();
        for part in [
            record.event_type.as_str(),
            "legacy/old-1",
            &format!("partition {}", record.partition()),
            &format!("offset {}", record.offset()),
            "topic legacy",
        ] {
            assert!(text.contains(part), "{text:?} names {part:?}");
        }
    }
}

/// Case 22: ids, type names, payloads and metadata beyond the limits, empty ids, ids with
/// SQL metacharacters or invalid UTF-8 get typed errors and change nothing stored.
pub async fn bad_input_is_refused_and_changes_nothing<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let good = stream("account", "good");
    store
        .append(append(&good, ExpectedVersion::NoStream, events(0..1)))
        .await
        .expect("set up");
    let before = store
        .read_stream(&good, StreamVersion(1))
        .await
        .expect("read");

    for (kind, id) in [
        ("account", String::new()),
        ("account", "x".repeat(limits::MAX_ID_BYTES + 1)),
        ("account", "a'); DROP TABLE keel_events; --".to_owned()),
        ("account", "a b".to_owned()),
        ("", "x".to_owned()),
        ("acc/ount", "x".to_owned()),
    ] {
        let err = StreamId::new(kind, &id).expect_err("refused");
        assert!(
            matches!(
                err,
                IdError::Empty { .. } | IdError::TooLong { .. } | IdError::BadCharacter { .. }
            ),
            "{err}"
        );
    }
    assert!(matches!(
        StreamId::from_bytes("account", b"ab\xff"),
        Err(IdError::InvalidUtf8 { .. })
    ));
    assert!(CommandId::new("x".repeat(limits::MAX_ID_BYTES + 1)).is_err());

    let cases: Vec<(Vec<NewEvent>, &str)> = vec![
        (vec![NewEvent::raw("", 1, b"{}".to_vec())], "empty type"),
        (
            vec![NewEvent::raw(
                "x".repeat(limits::MAX_NAME_BYTES + 1),
                1,
                b"{}".to_vec(),
            )],
            "long type",
        ),
        (
            vec![NewEvent::raw("Drop'Table", 1, b"{}".to_vec())],
            "type with a quote",
        ),
        (
            vec![NewEvent::raw("T", 0, b"{}".to_vec())],
            "schema version 0",
        ),
        (
            vec![NewEvent::raw(
                "T",
                1,
                vec![0; limits::MAX_PAYLOAD_BYTES + 1],
            )],
            "big payload",
        ),
        (
            vec![
                NewEvent::raw("T", 1, b"{}".to_vec())
                    .with_metadata("k", "v".repeat(limits::MAX_METADATA_BYTES)),
            ],
            "big metadata",
        ),
        (
            events(0..limits::MAX_EVENTS_PER_APPEND as u64 + 1),
            "too many events",
        ),
    ];
    for (evs, what) in cases {
        let err = store
            .append(append(&good, ExpectedVersion::Any, evs))
            .await
            .expect_err(what);
        assert!(
            matches!(
                err,
                Error::InvalidEvent { .. } | Error::TooManyEvents { .. }
            ),
            "{what}: {err}"
        );
    }
    for n in [0, limits::MAX_PARTITIONS + 1] {
        let err = store
            .ensure_topic(&Topic::new("bad-count").expect("topic"), n)
            .await
            .expect_err("refused");
        assert!(matches!(err, Error::BadPartitionCount { .. }), "{err}");
    }
    assert_eq!(
        store
            .read_stream(&good, StreamVersion(1))
            .await
            .expect("read"),
        before,
        "nothing changed"
    );
    let topics: HashSet<String> = store
        .topics()
        .await
        .expect("topics")
        .into_iter()
        .map(|t| t.topic.to_string())
        .collect();
    assert_eq!(
        topics,
        HashSet::from(["account".to_owned()]),
        "no topic created by refused input"
    );
}

/// Case 20, in-process part: everything acknowledged before a close is there after reopening,
/// in the same positions. (The SIGKILL half runs per durable backend in `keel-tests`.)
pub async fn acknowledged_appends_survive_reopening<B: Backend>() {
    let (backend, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    let mut handles = Vec::new();
    for t in 0..8u64 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..20 {
                let s = stream("durable", &format!("t{t}-{}", i % 3));
                let a = store
                    .append(append(&s, ExpectedVersion::Any, events(i..i + 2)))
                    .await
                    .expect("append");
                acked.push(a);
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for h in handles {
        acked.extend(h.await.expect("task"));
    }
    let durable = store.capabilities().durable;
    let Ok(store) = Arc::try_unwrap(store) else {
        panic!("no other handle to the store is left");
    };
    backend.close(store).await;
    let store = backend.open().await;
    if !durable {
        assert!(
            store.topics().await.expect("topics").is_empty(),
            "a non-durable store starts empty"
        );
        return;
    }
    for a in &acked {
        let read = store
            .read_stream(&a.stream, a.first_version)
            .await
            .expect("read");
        let offsets: Vec<Offset> = read
            .iter()
            .take(a.offsets.len())
            .map(crate::RecordedEvent::offset)
            .collect();
        assert_eq!(
            offsets, a.offsets,
            "acknowledged append to {} is where it was acknowledged",
            a.stream
        );
    }
    backend.close(store).await;
}
