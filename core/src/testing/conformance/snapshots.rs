//! Snapshots: found by the next load, ignored when of another shape, never ahead of their
//! stream, durable where the store is, and neutral to appends and command ids (cases 26–29).

#![allow(clippy::wildcard_imports)]

use super::*;
use crate::aggregate::{Aggregate, Apply, Command, Handle};
use crate::repository::{CommandOptions, Repository};
use crate::snapshot::{Snapshot, SnapshotConfig, SnapshotError};

/// The aggregate the snapshot cases run: the sum of the probes' numbers, and how many events
/// this instance folded (not part of its snapshot, so a load from a snapshot shows how much it
/// folded after it).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    /// The sum of every folded probe's number.
    pub sum: u64,
    /// Events folded by this instance since it was created or restored.
    #[serde(skip)]
    pub folded: u64,
}

/// Why a [`Tally`] refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a tally adds positive numbers only")]
pub struct ZeroAdd;

/// The one command of a [`Tally`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TallyCommand {
    /// Adds a number (refused when 0).
    Add(u64),
}

impl Command for TallyCommand {
    fn name(&self) -> &'static str {
        "add"
    }
}

impl Apply<Probe> for Tally {
    fn apply(&mut self, event: &Probe) {
        let Probe::Tested { n } = event;
        self.sum += n;
        self.folded += 1;
    }
}

impl Aggregate for Tally {
    const KIND: &'static str = "tally";
    type Event = Probe;
    type Error = ZeroAdd;
    const SNAPSHOT: Option<SnapshotConfig> = Some(SnapshotConfig {
        version: 1,
        every: 10,
    });

    fn apply_event(&mut self, event: &Probe) {
        self.apply(event);
    }

    fn encode_snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        crate::__private::encode_snapshot(Self::KIND, self)
    }

    fn decode_snapshot(payload: &[u8]) -> Result<Self, SnapshotError> {
        crate::__private::decode_snapshot(Self::KIND, payload)
    }
}

impl Handle for Tally {
    type Command = TallyCommand;
    type Context = ();

    #[allow(clippy::manual_async_fn, reason = "the trait's signature")]
    fn handle<'a>(
        &'a self,
        command: TallyCommand,
        _context: &'a (),
    ) -> impl Future<Output = Result<Vec<Probe>, ZeroAdd>> + Send + 'a {
        async move {
            let TallyCommand::Add(n) = command;
            if n == 0 {
                Err(ZeroAdd)
            } else {
                Ok(vec![Probe::Tested { n }])
            }
        }
    }
}

fn tally_stream(id: &str) -> StreamId {
    stream(Tally::KIND, id)
}

/// Adds 1..=n to tally `id`, one command each; returns the sum.
async fn add_up<S: EventStore>(repo: &Repository<Tally, S>, id: &str, n: u64) -> u64 {
    for k in 1..=n {
        repo.execute(id, TallyCommand::Add(k))
            .await
            .expect("a tally accepts positive numbers");
    }
    n * (n + 1) / 2
}

/// Case 26: a snapshot saved at version v is found by the next load, which folds only the
/// events after v; the state equals a fold of the whole stream.
pub async fn snapshot_is_found_by_the_next_load<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    let repo = Repository::<Tally, _>::new(Arc::clone(&store));
    let sum = add_up(&repo, "t1", 25).await;

    let snapshot = store
        .load_snapshot(&tally_stream("t1"))
        .await
        .expect("load the snapshot")
        .expect("every 10 events a snapshot is saved");
    assert_eq!(
        snapshot.version,
        StreamVersion(20),
        "the latest snapshot wins"
    );
    assert_eq!(snapshot.shape, 1);

    // A new repository has nothing cached: it loads from the store.
    let loaded = Repository::<Tally, _>::new(Arc::clone(&store))
        .load("t1")
        .await
        .expect("load");
    assert_eq!(loaded.version, StreamVersion(25));
    assert_eq!(
        loaded.state.sum, sum,
        "snapshot + tail equals the whole fold"
    );
    assert_eq!(
        loaded.state.folded, 5,
        "only the events after the snapshot are folded"
    );

    // The same through a raw fold of every record.
    let records = store
        .read_stream(&tally_stream("t1"), StreamVersion(1))
        .await
        .expect("read");
    let whole: u64 = records.iter().map(n_of).sum();
    assert_eq!(whole, sum);
}

/// Case 27: a snapshot taken with another shape version is ignored (the load folds from the
/// start), never decoded as the current shape; the next commands save one of the current
/// shape.
pub async fn snapshot_of_another_shape_is_ignored<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    let repo = Repository::<Tally, _>::new(Arc::clone(&store))
        .snapshot_every(0)
        .cache_capacity(0);
    let sum = add_up(&repo, "t2", 12).await;
    assert_eq!(
        store
            .load_snapshot(&tally_stream("t2"))
            .await
            .expect("load"),
        None,
        "snapshot_every(0) saves none"
    );
    // A snapshot of shape 2 whose bytes would decode as a (wrong) current state.
    let foreign = Snapshot::new(
        tally_stream("t2"),
        StreamVersion(12),
        2,
        br#"{"sum":999999}"#.to_vec(),
    );
    store.save_snapshot(foreign).await.expect("save");

    let loaded = repo.load("t2").await.expect("load");
    assert_eq!(
        loaded.state.sum, sum,
        "the foreign snapshot was not decoded"
    );
    assert_eq!(loaded.state.folded, 12, "the load folded the whole stream");

    // With snapshots on, the next command replaces it with one of the current shape.
    let repo = Repository::<Tally, _>::new(Arc::clone(&store)).snapshot_every(1);
    repo.execute("t2", TallyCommand::Add(100))
        .await
        .expect("add");
    let snapshot = store
        .load_snapshot(&tally_stream("t2"))
        .await
        .expect("load")
        .expect("a snapshot");
    assert_eq!((snapshot.shape, snapshot.version), (1, StreamVersion(13)));
    let reloaded = Repository::<Tally, _>::new(Arc::clone(&store))
        .load("t2")
        .await
        .expect("load");
    assert_eq!(reloaded.state.sum, sum + 100);
    assert_eq!(reloaded.state.folded, 0);
}

/// Case 28: a snapshot never claims a version its stream does not have: saving one above the
/// stream's version, at version 0 or over the size limit is refused and saves nothing; an
/// older snapshot of the same shape does not replace a newer one.
pub async fn snapshot_ahead_of_its_stream_is_refused<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = tally_stream("t3");
    let snap = |version: u64, shape: u32, payload: &[u8]| {
        Snapshot::new(s.clone(), StreamVersion(version), shape, payload.to_vec())
    };
    // No stream yet: any version is ahead of it.
    let refused = store.save_snapshot(snap(1, 1, b"{}")).await;
    assert!(
        matches!(&refused, Err(Error::SnapshotAhead { version, actual, .. })
            if *version == StreamVersion(1) && *actual == StreamVersion(0)),
        "{refused:?}"
    );
    store
        .append(append(&s, ExpectedVersion::NoStream, events(0..5)))
        .await
        .expect("append");
    let refused = store.save_snapshot(snap(6, 1, b"{}")).await;
    assert!(
        matches!(&refused, Err(Error::SnapshotAhead { version, actual, .. })
            if *version == StreamVersion(6) && *actual == StreamVersion(5)),
        "{refused:?}"
    );
    let message = refused.map_err(|e| e.to_string()).expect_err("refused");
    assert!(
        message.contains("tally/t3") && message.contains('6') && message.contains('5'),
        "{message}"
    );
    assert!(matches!(
        store.save_snapshot(snap(0, 1, b"{}")).await,
        Err(Error::InvalidSnapshot { .. })
    ));
    let huge = vec![b' '; limits::MAX_SNAPSHOT_BYTES + 1];
    assert!(matches!(
        store.save_snapshot(snap(5, 1, &huge)).await,
        Err(Error::InvalidSnapshot { .. })
    ));
    assert_eq!(
        store.load_snapshot(&s).await.expect("load"),
        None,
        "nothing refused was saved"
    );

    // Newest of a shape wins; another shape replaces whatever is stored.
    store
        .save_snapshot(snap(4, 1, b"four"))
        .await
        .expect("save");
    store
        .save_snapshot(snap(3, 1, b"three"))
        .await
        .expect("an older one is not an error");
    let stored = store
        .load_snapshot(&s)
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(
        (stored.version, stored.payload.as_slice()),
        (StreamVersion(4), &b"four"[..])
    );
    store
        .save_snapshot(snap(5, 1, b"five"))
        .await
        .expect("save");
    store
        .save_snapshot(snap(2, 2, b"two, shape 2"))
        .await
        .expect("save");
    let stored = store
        .load_snapshot(&s)
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(
        (stored.version, stored.shape, stored.payload.as_slice()),
        (StreamVersion(2), 2, &b"two, shape 2"[..])
    );
    // Snapshots of one stream are not another's.
    assert_eq!(
        store
            .load_snapshot(&tally_stream("t3-other"))
            .await
            .expect("load"),
        None
    );
}

/// Case 28, durable part: snapshots survive closing and reopening the store. A non-durable
/// backend starts empty, snapshots included.
pub async fn snapshots_survive_reopening<B: Backend>() {
    let (backend, store) = fresh::<B>(4).await;
    let durable = store.capabilities().durable;
    let s = tally_stream("t4");
    store
        .append(append(&s, ExpectedVersion::NoStream, events(0..3)))
        .await
        .expect("append");
    let saved = Snapshot::new(s.clone(), StreamVersion(3), 1, br#"{"sum":3}"#.to_vec());
    store.save_snapshot(saved.clone()).await.expect("save");
    backend.close(store).await;

    let store = backend.open().await;
    let found = store.load_snapshot(&s).await.expect("load");
    if durable {
        assert_eq!(found, Some(saved), "a durable store keeps its snapshots");
    } else {
        assert_eq!(found, None, "a non-durable store starts empty");
    }
    backend.close(store).await;
}

/// Case 29: appends after a snapshot, and a command id committed before it, behave exactly as
/// without it.
pub async fn snapshots_change_nothing_about_appends_and_command_ids<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    let repo = Repository::<Tally, _>::new(Arc::clone(&store));
    let early = CommandId::new("early-add").expect("a valid id");
    let first = repo
        .execute_with(
            "t5",
            TallyCommand::Add(7),
            CommandOptions::from(early.clone()),
        )
        .await
        .expect("add");
    add_up(&repo, "t5", 15).await;
    let snapshot = store
        .load_snapshot(&tally_stream("t5"))
        .await
        .expect("load")
        .expect("a snapshot after 16 events");
    assert_eq!(snapshot.version, StreamVersion(10));

    // The early command is still known, through a fresh repository and the raw store.
    let fresh_repo = Repository::<Tally, _>::new(Arc::clone(&store));
    let again = fresh_repo
        .execute_with(
            "t5",
            TallyCommand::Add(7),
            CommandOptions::from(early.clone()),
        )
        .await
        .expect("a replay");
    assert!(again.replayed);
    assert_eq!(again.events, first.events);
    let reused = fresh_repo
        .execute_with("t5", TallyCommand::Add(8), CommandOptions::from(early))
        .await;
    assert!(
        matches!(
            reused,
            Err(crate::repository::Error::Store(
                Error::CommandIdReused { .. }
            ))
        ),
        "{reused:?}"
    );

    // Raw appends after the snapshot check versions as always, and reads still start at 1.
    let s = tally_stream("t5");
    let stale = store
        .append(append(
            &s,
            ExpectedVersion::Exact(StreamVersion(10)),
            events(0..1),
        ))
        .await;
    assert!(
        matches!(&stale, Err(Error::Conflict { actual, .. }) if *actual == StreamVersion(16)),
        "{stale:?}"
    );
    let appended = store
        .append(append(
            &s,
            ExpectedVersion::Exact(StreamVersion(16)),
            events(1..3),
        ))
        .await
        .expect("append");
    assert_eq!(appended.first_version, StreamVersion(17));
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(18)
    );
    let all = store.read_stream(&s, StreamVersion(1)).await.expect("read");
    let versions: Vec<u64> = all.iter().map(|r| r.version.0).collect();
    assert_eq!(versions, (1..=18).collect::<Vec<_>>());

    // A cached repository sees the raw appends (a conflict, then a catch-up).
    let next = repo.execute("t5", TallyCommand::Add(1)).await.expect("add");
    assert_eq!(next.version, StreamVersion(19));
    assert_eq!(next.attempts, 2, "the stale cache met one conflict");
    let loaded = Repository::<Tally, _>::new(Arc::clone(&store))
        .load("t5")
        .await
        .expect("load");
    assert_eq!(loaded.state.sum, 7 + 120 + 1 + 2 + 1);
}
