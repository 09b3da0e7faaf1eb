//! Conformance case 23 on the real broker: two writers claim one partition. Once the second
//! has initialised its transactional producer, the first's appends fail with a fenced error,
//! the first then lets the partition go (later appends: `NotOwner`), and the partition holds
//! no duplicate or conflicting stream version — even with the first writer appending flat out
//! while it is fenced.

mod kafka;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keel::store::Error;
use keel::testing::conformance::kafka_bootstrap;
use keel::{
    AppendRequest, CommandId, CommandMeta, EventStore, ExpectedVersion, Fingerprint, NewEvent,
    Partition, StreamId, StreamVersion, Topic,
};

use kafka::{Ack, builder, check_exactly_once, read_all, unique_prefix};

fn request(
    stream: &StreamId,
    expected: ExpectedVersion,
    id: &str,
) -> anyhow::Result<AppendRequest> {
    Ok(AppendRequest::new(
        stream.clone(),
        expected,
        vec![
            NewEvent::raw(
                "Tested",
                1,
                format!(r#"{{"by":"{id}","k":0}}"#).into_bytes(),
            ),
            NewEvent::raw(
                "Tested",
                1,
                format!(r#"{{"by":"{id}","k":1}}"#).into_bytes(),
            ),
        ],
    )
    .with_command(CommandMeta::new(
        CommandId::new(id)?,
        Fingerprint::of_bytes(id.as_bytes()),
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_writer_writes_nothing_and_versions_stay_dense() -> anyhow::Result<()> {
    let bootstrap = kafka_bootstrap();
    let prefix = unique_prefix("fencing");
    let topic = Topic::new("fenced")?;
    let first = Arc::new(builder(&bootstrap, &prefix).open().await?);
    first.ensure_topic(&topic, 1).await?;
    let streams: Vec<StreamId> = (0..4)
        .map(|i| StreamId::new("fenced", format!("s{i}")))
        .collect::<Result<_, _>>()?;

    // The first writer appends flat out from 4 tasks, each with the version it last saw.
    let acked = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (t, stream) in streams.iter().cloned().enumerate() {
        let (first, acked) = (Arc::clone(&first), Arc::clone(&acked));
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut expected = StreamVersion(0);
            for i in 0.. {
                let id = format!("first-t{t}-{i}");
                match first
                    .append(request(&stream, ExpectedVersion::Exact(expected), &id)?)
                    .await
                {
                    Ok(a) => {
                        expected = a.last_version();
                        acks.push(Ack::from_appended(&a, &id));
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(Error::Fenced {
                        topic,
                        partition,
                        detail,
                    }) => {
                        assert_eq!(topic.as_str(), "fenced");
                        assert_eq!(partition, Partition(0));
                        assert!(detail.contains("transactional.id"), "{detail}");
                        return anyhow::Ok((acks, i));
                    }
                    Err(e) => anyhow::bail!("the first writer's append {id} failed: {e}"),
                }
            }
            unreachable!("the loop returns")
        }));
    }
    // Once it has written some, the second writer takes the partition over.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < 40 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first writer acknowledged too little"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = builder(&bootstrap, &prefix).open().await?;
    second.take_partition(&topic, Partition(0)).await?;
    let mut acks = Vec::new();
    for task in tasks {
        let (task_acks, attempts) = task.await??;
        assert!(attempts > 0);
        acks.extend(task_acks);
    }

    // The fenced writer let the partition go: it appends nothing more, and says the
    // partition is not its own (send commands to the owner).
    let err = first
        .append(request(
            &streams[0],
            ExpectedVersion::Any,
            "after-the-fence",
        )?)
        .await
        .expect_err("a fenced writer cannot append");
    assert!(
        matches!(err, Error::NotOwner { .. } | Error::Fenced { .. }),
        "{err}"
    );
    assert!(
        !first.owns(&topic, Partition(0)),
        "a fenced writer does not own its partition any more"
    );
    assert!(first.owned_partitions().is_empty());
    let err = first
        .append(request(
            &streams[0],
            ExpectedVersion::Any,
            "after-the-fence",
        )?)
        .await
        .expect_err("a fenced writer cannot append");
    assert!(matches!(err, Error::NotOwner { .. }), "{err}");
    assert!(
        err.to_string().contains("does not own topic"),
        "a clear message: {err}"
    );

    // The second writer serves the versions of everything the first committed, and
    // continues right after them.
    let all = read_all(&second, &topic, 1).await?;
    for stream in &streams {
        let in_log = all[&0].iter().filter(|r| r.stream == *stream).count() as u64;
        assert_eq!(second.stream_version(stream).await?, StreamVersion(in_log));
        let a = second
            .append(request(
                stream,
                ExpectedVersion::Exact(StreamVersion(in_log)),
                &format!("second-{}", stream.id()),
            )?)
            .await?;
        assert_eq!(a.first_version, StreamVersion(in_log + 1));
        acks.push(Ack::from_appended(&a, &format!("second-{}", stream.id())));
    }
    let all = read_all(&second, &topic, 1).await?;
    check_exactly_once(&all, &acks, 2);
    assert!(
        all[&0]
            .iter()
            .all(|r| r.command_id.as_ref().map(CommandId::as_str) != Some("after-the-fence")),
        "nothing of the fenced append was written"
    );
    second.close().await;
    first.close().await;
    Ok(())
}
