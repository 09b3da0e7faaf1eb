//! The SQLite store keeps its write-ahead log bounded under sustained writes while readers
//! never stop (readers starve SQLite's own checkpoints), and truncates it when writes stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use keel::store::sqlite::{SqliteStore, Synchronous};
use keel::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, Offset, Partition, StreamId, Topic,
};

/// The store's WAL limit in this test.
const LIMIT: u64 = 2 * 1024 * 1024;
/// The bound the test holds the store to: a WAL grows a little past its limit between two
/// checkpoints.
const BOUND: u64 = 3 * LIMIT;
/// Payload bytes to append: several times the bound.
const TO_WRITE: u64 = 8 * BOUND;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wal_stays_bounded_under_readers_and_is_truncated_when_quiet() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(
        SqliteStore::builder(dir.path().join("wal.db"))
            .synchronous(Synchronous::Normal)
            .wal_limit(LIMIT)
            .default_partitions(2)
            .open()
            .await?,
    );
    let topic = Topic::new("wal")?;
    store.ensure_topic(&topic, 2).await?;

    // Readers that never stop: two tails and a loop re-reading the start of a partition.
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for p in 0..2 {
        let mut tail = Arc::clone(&store).tail(topic.clone(), Partition(p), Offset(0));
        let stop = Arc::clone(&stop);
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(50), tail.next()).await {
                    Ok(Some(Ok(_))) | Err(_) => {}
                    Ok(other) => panic!("the tail ended: {other:?}"),
                }
            }
        }));
    }
    {
        let (store, stop, topic) = (Arc::clone(&store), Arc::clone(&stop), topic.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                store
                    .read_partition(&topic, Partition(0), Offset(0), 2_000)
                    .await
                    .expect("read");
            }
        }));
    }

    // 16 writers with 2 KiB events until TO_WRITE bytes of payload are in.
    let payload = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2_000)).into_bytes();
    let written = Arc::new(AtomicU64::new(0));
    let mut max_wal = 0;
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (store, payload) = (Arc::clone(&store), payload.clone());
            let written = Arc::clone(&written);
            tokio::spawn(async move {
                let stream = StreamId::new("wal", format!("w{w}")).expect("stream id");
                while written.fetch_add(payload.len() as u64, Ordering::Relaxed) < TO_WRITE {
                    let event = NewEvent::raw("Padded", 1, payload.clone());
                    store
                        .append(AppendRequest::new(
                            stream.clone(),
                            ExpectedVersion::Any,
                            vec![event],
                        ))
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    let wal_file = dir.path().join("wal.db-wal");
    while writers.iter().any(|w| !w.is_finished()) {
        let on_disk = std::fs::metadata(&wal_file).map_or(0, |m| m.len());
        max_wal = max_wal.max(on_disk);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in writers {
        w.await?;
    }
    let database = std::fs::metadata(dir.path().join("wal.db"))?.len();
    assert!(
        database > 2 * BOUND,
        "the run must write more than twice the bound ({database} bytes in the database)"
    );
    assert!(
        max_wal <= BOUND,
        "the WAL reached {max_wal} bytes under sustained load; the bound is {BOUND}"
    );

    // Writes stop (readers go on): the writer truncates the WAL once it is quiet.
    let quiet = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let wal = std::fs::metadata(&wal_file).map_or(0, |m| m.len());
            if wal == 0 && store.stats().wal_bytes == Some(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        quiet.is_ok(),
        "the WAL was not truncated once writes stopped: {:?}",
        store.stats()
    );
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await?;
    }
    store.close().await;
    Ok(())
}
