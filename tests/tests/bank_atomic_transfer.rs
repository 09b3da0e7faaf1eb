//! The bank's transfer made safe with the atomic append to several streams
//! (`EventStore::append_all`, SQLite and memory): money is never created, destroyed or left in
//! flight — under concurrency, under a command that lands between the decision and the
//! append, and when the process is killed with SIGKILL mid-run.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bank::{AccountCommand, AccountError, AccountEvent, Bank, TransferError};
use keel::repository::Error;
use keel::store::sqlite::SqliteStore;
use keel::store::{AppendRequest, Appended, Capabilities, CommandRecord, EventStore, TopicInfo};
use keel::{
    CommandId, ExpectedVersion, NewEvent, Offset, Partition, RecordedEvent, Snapshot, StreamId,
    StreamVersion, Topic,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A store that forwards to SQLite, can hide its atomic appends, and can slip one append in
/// just before the next `append_all` (another writer winning the race).
struct Hooked {
    inner: Arc<SqliteStore>,
    atomic: bool,
    slip_in: Mutex<Option<AppendRequest>>,
    append_alls: AtomicU64,
}

#[keel::async_trait]
impl EventStore for Hooked {
    async fn append(&self, request: AppendRequest) -> keel::store::Result<Appended> {
        self.inner.append(request).await
    }
    async fn append_all(&self, requests: Vec<AppendRequest>) -> keel::store::Result<Vec<Appended>> {
        self.append_alls.fetch_add(1, Ordering::Relaxed);
        if !self.atomic {
            return Err(keel::store::Error::Unsupported {
                operation: "an atomic append to several streams",
                backend: "hooked",
            });
        }
        let slip = self
            .slip_in
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(slip) = slip {
            self.inner.append(slip).await?;
        }
        self.inner.append_all(requests).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
    ) -> keel::store::Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, from).await
    }
    async fn stream_version(&self, stream: &StreamId) -> keel::store::Result<StreamVersion> {
        self.inner.stream_version(stream).await
    }
    async fn command(
        &self,
        stream: &StreamId,
        command: &CommandId,
    ) -> keel::store::Result<Option<CommandRecord>> {
        self.inner.command(stream, command).await
    }
    async fn read_partition(
        &self,
        topic: &Topic,
        partition: Partition,
        from: Offset,
        limit: usize,
    ) -> keel::store::Result<Vec<RecordedEvent>> {
        self.inner
            .read_partition(topic, partition, from, limit)
            .await
    }
    async fn head(&self, topic: &Topic, partition: Partition) -> keel::store::Result<Offset> {
        self.inner.head(topic, partition).await
    }
    async fn ensure_topic(&self, topic: &Topic, partitions: u32) -> keel::store::Result<TopicInfo> {
        self.inner.ensure_topic(topic, partitions).await
    }
    async fn topics(&self) -> keel::store::Result<Vec<TopicInfo>> {
        self.inner.topics().await
    }
    async fn save_snapshot(&self, snapshot: Snapshot) -> keel::store::Result<()> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn load_snapshot(&self, stream: &StreamId) -> keel::store::Result<Option<Snapshot>> {
        self.inner.load_snapshot(stream).await
    }
    fn subscribe_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.subscribe_commits()
    }
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.inner.capabilities();
        capabilities.multi_stream_append = self.atomic;
        capabilities
    }
    fn stats(&self) -> keel::store::StoreStats {
        self.inner.stats()
    }
}

async fn hooked(atomic: bool) -> anyhow::Result<(tempfile::TempDir, Arc<Hooked>, Bank<Hooked>)> {
    let dir = tempfile::tempdir()?;
    let inner = Arc::new(SqliteStore::open(dir.path().join("bank.db")).await?);
    let store = Arc::new(Hooked {
        inner,
        atomic,
        slip_in: Mutex::new(None),
        append_alls: AtomicU64::new(0),
    });
    let bank = Bank::new(Arc::clone(&store));
    bank.open("alice", "Alice", 0, None).await?;
    bank.deposit("alice", 100, None).await?;
    bank.open("bob", "Bob", 0, None).await?;
    Ok((dir, store, bank))
}

/// Both legs of an atomic transfer are in one commit: next to each other in the log's commit
/// order, written by one `append_all`.
#[tokio::test]
async fn an_atomic_transfer_commits_both_legs_in_one_append() -> anyhow::Result<()> {
    let (_dir, store, bank) = hooked(true).await?;
    let commits_before = store.stats().commits;
    let transfer = bank
        .transfer("alice", "bob", 30, &CommandId::new("t1")?)
        .await?;
    assert_eq!(store.append_alls.load(Ordering::Relaxed), 1);
    assert_eq!(
        store.stats().commits,
        commits_before + 1,
        "one transaction for both legs"
    );
    assert_eq!(transfer.withdrawn.events.len(), 1);
    assert_eq!(transfer.deposited.events.len(), 1);
    assert_eq!(bank.account("alice").await?.state.balance(), 70);
    assert_eq!(bank.account("bob").await?.state.balance(), 30);
    let again = bank
        .transfer("alice", "bob", 30, &CommandId::new("t1")?)
        .await?;
    assert!(again.replayed(), "a retry moves nothing");
    assert_eq!(bank.account("bob").await?.state.balance(), 30);
    Ok(())
}

/// Another writer closes the destination between the transfer's decision and its append:
/// the append meets a conflict, the transfer decides again on the new state, is refused, and
/// nothing moved — the money never leaves alice.
#[tokio::test]
async fn a_destination_closed_between_decision_and_append_moves_nothing() -> anyhow::Result<()> {
    let (_dir, store, bank) = hooked(true).await?;
    let close = NewEvent::from_event(&AccountEvent::Closed)?;
    *store
        .slip_in
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(AppendRequest::new(
        StreamId::new("account", "bob")?,
        ExpectedVersion::Exact(StreamVersion(1)),
        vec![close],
    ));
    let refused = bank
        .transfer("alice", "bob", 30, &CommandId::new("t1")?)
        .await;
    let Err(TransferError::NothingMoved { account, source }) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert_eq!(account, "bob");
    assert!(matches!(source, Error::Rejected(AccountError::Closed)));
    assert_eq!(
        store.append_alls.load(Ordering::Relaxed),
        1,
        "one append met the conflict; the second decision was a refusal"
    );
    assert_eq!(bank.account("alice").await?.state.balance(), 100);
    assert_eq!(bank.account("alice").await?.version, StreamVersion(2));
    Ok(())
}

/// On a store without atomic appends the transfer still works, in two steps, and never asks
/// the store for what it cannot do.
#[tokio::test]
async fn without_the_capability_a_transfer_takes_two_steps() -> anyhow::Result<()> {
    let (_dir, store, bank) = hooked(false).await?;
    bank.transfer("alice", "bob", 30, &CommandId::new("t1")?)
        .await?;
    assert_eq!(store.append_alls.load(Ordering::Relaxed), 0);
    assert_eq!(bank.account("alice").await?.state.balance(), 70);
    assert_eq!(bank.account("bob").await?.state.balance(), 30);
    Ok(())
}

/// 8 tasks run 25 transfers each between 4 accounts without overdraft, through one bank and
/// through a second bank on the same file (a second process's cache): the total is kept, no
/// balance goes below zero, and every transfer wrote both legs or neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_atomic_transfers_keep_the_total_and_never_overdraw() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bank.db");
    let one = Bank::open_sqlite(&path).await?;
    let two = Bank::open_sqlite(&path).await?;
    for a in 0..4 {
        one.open(&format!("a{a}"), "Owner", 0, None).await?;
        one.deposit(&format!("a{a}"), 500, None).await?;
    }
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let bank = if t % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            for i in 0..25u64 {
                let from = format!("a{}", (t + i) % 4);
                let to = format!("a{}", (t + 2 * i + 1) % 4);
                if from == to {
                    continue;
                }
                let id = CommandId::new(format!("t{t}-{i}"))?;
                // A transfer that kept meeting conflicts moved nothing: the caller runs it
                // again under its id, as a client would.
                loop {
                    match bank.transfer(&from, &to, 50 + (t * 7 + i) % 200, &id).await {
                        Ok(_)
                        | Err(TransferError::NothingMoved {
                            source: Error::Rejected(AccountError::InsufficientFunds { .. }),
                            ..
                        }) => break,
                        Err(TransferError::NothingMoved {
                            source: Error::TooManyConflicts { .. },
                            ..
                        }) => continue,
                        Err(e) => return Err(anyhow::Error::new(e)),
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    check_ledger(&one, 4, 2_000).await?;
    Ok(())
}

/// Balances sum to `total`, none is negative, and every transfer id has both legs or none.
async fn check_ledger<S: EventStore + ?Sized>(
    bank: &Bank<S>,
    accounts: u64,
    total: i64,
) -> anyhow::Result<usize> {
    let mut sum = 0;
    let mut legs: HashMap<String, Vec<&'static str>> = HashMap::new();
    for a in 0..accounts {
        let statement = bank.show(&format!("a{a}")).await?;
        assert!(
            statement.state.balance() >= 0,
            "a{a} went below zero: {}",
            statement.state.balance()
        );
        sum += statement.state.balance();
        for line in &statement.lines {
            let Some(id) = line.command_id.as_ref().map(CommandId::as_str) else {
                continue;
            };
            if let Some(transfer) = id.strip_suffix("-out") {
                legs.entry(transfer.to_owned()).or_default().push("out");
            } else if let Some(transfer) = id.strip_suffix("-in") {
                legs.entry(transfer.to_owned()).or_default().push("in");
            }
        }
    }
    assert_eq!(sum, total, "no money created or destroyed");
    for (transfer, mut l) in legs.clone() {
        l.sort_unstable();
        assert_eq!(l, ["in", "out"], "transfer {transfer} has both legs, once");
    }
    Ok(legs.len())
}

/// A process running transfers is killed with SIGKILL at random moments, six times over the
/// same file: afterwards every transfer has both legs or none, the total is kept and no
/// account is overdrawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_transfers_survive_sigkill_whole_or_not_at_all() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bank.db");
    let mut acknowledged = 0;
    for round in 0..6u64 {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_transfer_worker"))
            .arg(&db)
            .arg(round.to_string())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        // Kill only once transfers are being acknowledged, after a random number of them.
        let kill_at = 5 + (round * 37 + u64::from(std::process::id())) % 60;
        let mut seen = 0;
        while let Some(line) =
            tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await??
        {
            if line.starts_with("ACK ") {
                seen += 1;
                if seen >= kill_at {
                    break;
                }
            }
        }
        child.start_kill()?; // SIGKILL on Unix
        let status = child.wait().await?;
        assert!(!status.success(), "round {round}: the worker was killed");
        acknowledged += seen;
    }
    assert!(acknowledged >= 30, "transfers ran ({acknowledged})");
    let bank = Bank::open_sqlite(&db).await?;
    let transfers = check_ledger(&bank, 4, 4_000).await?;
    assert!(transfers > 0);
    // A transfer of the last round run again moves nothing more.
    let probe = bank.show("a0").await?;
    let out = probe
        .lines
        .iter()
        .filter_map(|l| l.command_id.as_ref())
        .find_map(|id| id.as_str().strip_suffix("-out").map(str::to_owned));
    if let Some(id) = out {
        let versions: Vec<_> = account_versions(&bank).await?;
        let replay = bank
            .execute(
                "a0",
                AccountCommand::Deposit { amount: 1 },
                Some(CommandId::new(format!("{id}-out"))?),
            )
            .await;
        // The id belongs to a withdrawal: reusing it for a deposit is refused, nothing written.
        assert!(replay.is_err());
        assert_eq!(account_versions(&bank).await?, versions);
    }
    bank.close().await;
    Ok(())
}

async fn account_versions(bank: &Bank) -> anyhow::Result<Vec<StreamVersion>> {
    let mut versions = Vec::new();
    for a in 0..4 {
        versions.push(bank.account(&format!("a{a}")).await?.version);
    }
    Ok(versions)
}
