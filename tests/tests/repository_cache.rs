//! The repository's hot-aggregate cache and per-aggregate queue: commands on one aggregate in
//! one process never conflict with each other, a stale cache (another process wrote) costs a
//! conflict and a catch-up but never a wrong decision, and a cancelled command leaves nothing
//! half-done behind. Run on memory and on SQLite.

use std::sync::Arc;

use bank::{Account, AccountCommand, AccountError};
use futures::future::join_all;
use keel::repository::Error;
use keel::store::memory::MemoryStore;
use keel::store::sqlite::SqliteStore;
use keel::{EventStore, Repository, StreamVersion};

async fn sqlite() -> anyhow::Result<(tempfile::TempDir, Arc<SqliteStore>)> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("events.db")).await?);
    Ok((dir, store))
}

fn open(owner: &str) -> AccountCommand {
    AccountCommand::Open {
        owner: owner.into(),
        overdraft_limit: 0,
    }
}

/// 64 tasks on 16 accounts, 20 deposits each: every command is decided once (no conflict),
/// and every account ends with the sum of its deposits at the right version.
async fn one_process_never_conflicts_with_itself<S: EventStore>(
    store: Arc<S>,
) -> anyhow::Result<()> {
    let repo = Repository::<Account, S>::new(store);
    for a in 0..16 {
        repo.execute(&format!("hot-{a}"), open("Hot")).await?;
    }
    let tasks = (0..64u64).map(|t| {
        let repo = repo.clone();
        tokio::spawn(async move {
            let mut attempts = Vec::new();
            for k in 0..20u64 {
                let done = repo
                    .execute(
                        &format!("hot-{}", t % 16),
                        AccountCommand::Deposit { amount: k + 1 },
                    )
                    .await?;
                attempts.push(done.attempts);
            }
            Ok::<_, Error<AccountError>>(attempts)
        })
    });
    for attempts in join_all(tasks).await {
        let attempts = attempts??;
        assert!(
            attempts.iter().all(|&a| a == 1),
            "a command met a conflict: {attempts:?}"
        );
    }
    let fresh = Repository::<Account, S>::new(Arc::clone(repo.store()));
    for a in 0..16 {
        let loaded = fresh.load(&format!("hot-{a}")).await?;
        // 4 tasks per account, each depositing 1..=20.
        assert_eq!(loaded.state.balance(), 4 * 210, "account hot-{a}");
        assert_eq!(loaded.version, StreamVersion(1 + 80));
    }
    let stats = repo.cache_stats();
    assert_eq!(stats.misses, 16, "each account was loaded once: {stats:?}");
    assert_eq!(stats.hits, 16 * 81 - 16);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_process_never_conflicts_with_itself_in_memory() -> anyhow::Result<()> {
    one_process_never_conflicts_with_itself(Arc::new(MemoryStore::new())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_process_never_conflicts_with_itself_on_sqlite() -> anyhow::Result<()> {
    let (_dir, store) = sqlite().await?;
    one_process_never_conflicts_with_itself(store).await
}

/// Two stores on one SQLite file stand for two processes. Each repository caches the account;
/// the other's writes make the cache stale.
#[tokio::test]
async fn a_stale_cache_costs_a_conflict_never_a_wrong_decision() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("events.db");
    let here = Repository::<Account, _>::new(Arc::new(SqliteStore::open(&path).await?));
    let there = Repository::<Account, _>::new(Arc::new(SqliteStore::open(&path).await?));

    here.execute("acc", open("Alice")).await?;
    here.execute("acc", AccountCommand::Deposit { amount: 10 })
        .await?;
    // `there` loads and caches the account, then deposits 100.
    there
        .execute("acc", AccountCommand::Deposit { amount: 100 })
        .await?;

    // `here` still caches a balance of 10: a withdrawal of 50 would be refused on it. It must
    // find out the state moved before refusing, and accept.
    let done = here
        .execute("acc", AccountCommand::Withdraw { amount: 50 })
        .await?;
    assert_eq!(done.version, StreamVersion(4));
    assert_eq!(
        done.attempts, 2,
        "decided on the stale state, then on the fresh one"
    );

    // A deposit on a stale cache meets the conflict at the append and is decided again.
    let stale = there
        .execute("acc", AccountCommand::Deposit { amount: 1 })
        .await?;
    assert_eq!(stale.version, StreamVersion(5));
    assert_eq!(stale.attempts, 2);

    // A rejection on a current cache costs one decision and one version check.
    let refused = here
        .execute("acc", AccountCommand::Withdraw { amount: 1_000 })
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::Rejected(AccountError::InsufficientFunds {
                balance: 61,
                ..
            }))
        ),
        "{refused:?}"
    );
    let fresh = Repository::<Account, _>::new(Arc::new(SqliteStore::open(&path).await?));
    assert_eq!(fresh.load("acc").await?.state.balance(), 61);
    Ok(())
}

#[tokio::test]
async fn the_cache_is_bounded_and_counts_its_hits() -> anyhow::Result<()> {
    let repo = Repository::<Account, _>::new(Arc::new(MemoryStore::new())).cache_capacity(2);
    for id in ["a", "b", "c"] {
        repo.execute(id, open(id)).await?;
    }
    let stats = repo.cache_stats();
    assert_eq!((stats.entries, stats.capacity), (2, 2), "{stats:?}");
    assert_eq!((stats.hits, stats.misses), (0, 3));
    // "a" was evicted: loaded again. "c" is cached.
    repo.execute("a", AccountCommand::Deposit { amount: 1 })
        .await?;
    repo.execute("c", AccountCommand::Deposit { amount: 1 })
        .await?;
    let stats = repo.cache_stats();
    assert_eq!((stats.hits, stats.misses), (1, 4), "{stats:?}");
    assert!((stats.hit_rate() - 0.2).abs() < 1e-9);

    // Without a cache every command loads, and the results are the same.
    let uncached = Repository::<Account, _>::new(Arc::clone(repo.store())).cache_capacity(0);
    uncached
        .execute("a", AccountCommand::Deposit { amount: 2 })
        .await?;
    uncached
        .execute("a", AccountCommand::Deposit { amount: 3 })
        .await?;
    assert_eq!(uncached.cache_stats().hits, 0);
    assert_eq!(repo.load("a").await?.state.balance(), 6);
    Ok(())
}

/// A command dropped at any point (before its turn, during its append) leaves the aggregate
/// usable, and the next command decides on the stored state, whatever the dropped one did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_commands_leave_nothing_half_done() -> anyhow::Result<()> {
    let (_dir, store) = sqlite().await?;
    let repo = Repository::<Account, _>::new(store);
    repo.execute("acc", open("Alice")).await?;
    for round in 0..60u64 {
        let mut command =
            Box::pin(repo.execute("acc", AccountCommand::Deposit { amount: round + 1 }));
        // Cancel after a different number of polls each round.
        for _ in 0..round % 6 {
            if let std::task::Poll::Ready(result) = futures::poll!(command.as_mut()) {
                result?;
                break;
            }
            tokio::task::yield_now().await;
        }
        drop(command);
        // A dropped append may already be queued at the SQLite writer, which still commits
        // it. The writer works in order: once a later job is answered, it is settled.
        repo.store()
            .ensure_topic(&keel::Topic::new("account")?, 4)
            .await?;

        // The stored truth, read by a repository with nothing cached.
        let stored = Repository::<Account, _>::new(Arc::clone(repo.store()))
            .load("acc")
            .await?;
        let balance = stored.state.balance();
        // The cached repository must decide on exactly that balance.
        let too_much = u64::try_from(balance)? + 1;
        let refused = repo
            .execute("acc", AccountCommand::Withdraw { amount: too_much })
            .await;
        assert!(
            matches!(&refused, Err(Error::Rejected(AccountError::InsufficientFunds { balance: b, .. })) if *b == balance),
            "round {round}: decided on another state than the stored one: {refused:?}"
        );
        let next = repo
            .execute("acc", AccountCommand::Deposit { amount: 1 })
            .await?;
        assert_eq!(next.version, stored.version.next(), "round {round}");
    }
    Ok(())
}

/// Counts the reads a repository makes, delegating everything to a real store.
struct CountingReads<S> {
    inner: S,
    reads: std::sync::atomic::AtomicU64,
}

impl<S> CountingReads<S> {
    fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn count(&self) {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl<S: EventStore> EventStore for CountingReads<S> {
    async fn append(&self, request: keel::AppendRequest) -> keel::store::Result<keel::Appended> {
        self.inner.append(request).await
    }
    async fn read_stream(
        &self,
        stream: &keel::StreamId,
        from: StreamVersion,
    ) -> keel::store::Result<Vec<keel::RecordedEvent>> {
        self.count();
        self.inner.read_stream(stream, from).await
    }
    async fn read_from_snapshot(
        &self,
        stream: &keel::StreamId,
        shape: Option<u32>,
    ) -> keel::store::Result<(Option<keel::Snapshot>, Vec<keel::RecordedEvent>)> {
        self.count();
        self.inner.read_from_snapshot(stream, shape).await
    }
    async fn stream_version(&self, stream: &keel::StreamId) -> keel::store::Result<StreamVersion> {
        self.count();
        self.inner.stream_version(stream).await
    }
    async fn command(
        &self,
        stream: &keel::StreamId,
        command: &keel::CommandId,
    ) -> keel::store::Result<Option<keel::store::CommandRecord>> {
        self.count();
        self.inner.command(stream, command).await
    }
    async fn read_partition(
        &self,
        topic: &keel::Topic,
        partition: keel::Partition,
        from: keel::Offset,
        limit: usize,
    ) -> keel::store::Result<Vec<keel::RecordedEvent>> {
        self.count();
        self.inner
            .read_partition(topic, partition, from, limit)
            .await
    }
    async fn head(
        &self,
        topic: &keel::Topic,
        partition: keel::Partition,
    ) -> keel::store::Result<keel::Offset> {
        self.inner.head(topic, partition).await
    }
    async fn ensure_topic(
        &self,
        topic: &keel::Topic,
        partitions: u32,
    ) -> keel::store::Result<keel::store::TopicInfo> {
        self.inner.ensure_topic(topic, partitions).await
    }
    async fn topics(&self) -> keel::store::Result<Vec<keel::store::TopicInfo>> {
        self.inner.topics().await
    }
    async fn save_snapshot(&self, snapshot: keel::Snapshot) -> keel::store::Result<()> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn load_snapshot(
        &self,
        stream: &keel::StreamId,
    ) -> keel::store::Result<Option<keel::Snapshot>> {
        self.count();
        self.inner.load_snapshot(stream).await
    }
    fn subscribe_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.subscribe_commits()
    }
    fn capabilities(&self) -> keel::store::Capabilities {
        self.inner.capabilities()
    }
    fn stats(&self) -> keel::store::StoreStats {
        self.inner.stats()
    }
}

fn new_account() -> keel::CommandOptions {
    keel::CommandOptions {
        expect_new: true,
        ..keel::CommandOptions::default()
    }
}

/// With the `expect_new` hint a new aggregate is decided without a read; a wrong hint costs
/// one wasted attempt and gives the same outcome as without it.
#[tokio::test]
async fn expect_new_skips_the_read_and_a_wrong_hint_changes_no_outcome() -> anyhow::Result<()> {
    let (_dir, sqlite) = sqlite().await?;
    let store = Arc::new(CountingReads {
        inner: Arc::clone(&sqlite),
        reads: Default::default(),
    });
    let repo = Repository::<Account, _>::new(Arc::clone(&store));
    let done = repo
        .execute_with("new-1", open("New"), new_account())
        .await?;
    assert_eq!((done.version, done.attempts), (StreamVersion(1), 1));
    assert_eq!(
        store.reads(),
        0,
        "a new aggregate is decided without a read"
    );

    // An existing account with 150 events (a snapshot at 100), not cached here.
    let other = Repository::<Account, _>::new(Arc::clone(&sqlite));
    other.execute("old", open("Old")).await?;
    for _ in 0..149 {
        other
            .execute("old", AccountCommand::Deposit { amount: 1 })
            .await?;
    }
    let refused = repo.execute_with("old", open("Again"), new_account()).await;
    assert!(
        matches!(refused, Err(Error::Rejected(AccountError::AlreadyOpen))),
        "{refused:?}"
    );
    let deposit = repo
        .execute_with("old", AccountCommand::Deposit { amount: 1 }, new_account())
        .await?;
    assert_eq!(deposit.version, StreamVersion(151));
    // The first command on "old" decided on the default state (accepted: `open`), met the
    // conflict, loaded and was rejected; the deposit then found the state cached.
    assert_eq!(deposit.attempts, 1);
    assert_eq!(repo.load("old").await?.state.balance(), 150);

    // A deposit with the hint on an uncached existing account: refused on the default state
    // (not open), checked against the store, then accepted on the loaded state.
    let fresh = Repository::<Account, _>::new(Arc::clone(&store));
    let before = store.reads();
    let deposit = fresh
        .execute_with("old", AccountCommand::Deposit { amount: 1 }, new_account())
        .await?;
    assert_eq!((deposit.version, deposit.attempts), (StreamVersion(152), 2));
    assert_eq!(
        store.reads() - before,
        2,
        "one version check, one load from the snapshot"
    );
    Ok(())
}
