//! Commands per second through `Repository::execute` with the bank's `Account`, beside the
//! crates.io crate `cqrs-es` 0.5 running the same account (`peers/cqrs_bank.rs`) in the same
//! process; aggregate load times with and without snapshots; and the raw SQLite ceilings the
//! figures are bounded by.
//!
//! `cargo bench -p keel-benches --bench commands` (cqrs-es's in-memory store prints a line per
//! load and commit: redirect stdout, `> /dev/null`, and read the results from
//! `target/criterion`, or run `scripts/bench-report.py`).
//!
//! Group names say the store and the workload; function names say who runs it and the input
//! size (events already in the aggregate's stream, or accounts).
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

#[path = "peers/cqrs_bank.rs"]
mod cqrs_bank;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bank::{Account, AccountCommand, AccountEvent};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keel::store::memory::MemoryStore;
use keel::store::sqlite::SqliteStore;
use keel::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Repository, StreamId};
use sqlx::{Connection as _, Executor as _};

type Runtime = tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn open_cmd(n: u64) -> AccountCommand {
    AccountCommand::Open {
        owner: format!("owner {n}"),
        overdraft_limit: 0,
    }
}

const DEPOSIT: AccountCommand = AccountCommand::Deposit { amount: 1 };

/// Writes an opened account with `deposits` deposits straight into the store, 1,000 events
/// per append (fast, and without snapshots).
async fn seed<S: EventStore + ?Sized>(store: &S, id: &str, deposits: u64) {
    let stream = StreamId::new("account", id).expect("stream id");
    let mut events = vec![
        NewEvent::from_event(&AccountEvent::Opened {
            owner: "hot".into(),
            overdraft_limit: 0,
        })
        .expect("encode"),
    ];
    let deposit = NewEvent::from_event(&AccountEvent::Deposited { amount: 1 }).expect("encode");
    let mut left = deposits;
    loop {
        while left > 0 && events.len() < 1_000 {
            let mut e = deposit.clone();
            e.event_id = uuid::Uuid::now_v7();
            events.push(e);
            left -= 1;
        }
        store
            .append(AppendRequest::new(
                stream.clone(),
                ExpectedVersion::Any,
                std::mem::take(&mut events),
            ))
            .await
            .expect("seed");
        if left == 0 {
            break;
        }
    }
}

/// Memory, 10,000 accounts × 5 commands (an open, then four deposits), one after another:
/// Keel beside cqrs-es.
fn distinct_accounts(c: &mut Criterion, rt: &Runtime) {
    const ACCOUNTS: u64 = 10_000;
    let ids: Vec<String> = (0..ACCOUNTS).map(|a| format!("acc-{a}")).collect();
    let mut group = c.benchmark_group("memory/10000_accounts_x5");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(ACCOUNTS * 5));
    group.bench_function("keel", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let ids = ids.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let repo = Repository::<Account, _>::new(Arc::new(MemoryStore::new()));
                    let start = Instant::now();
                    for (n, id) in ids.iter().enumerate() {
                        repo.execute(id, open_cmd(n as u64)).await.expect("open");
                    }
                    for _ in 0..4 {
                        for id in &ids {
                            repo.execute(id, DEPOSIT).await.expect("deposit");
                        }
                    }
                    total += start.elapsed();
                }
                total
            }
        });
    });
    group.bench_function("cqrs-es", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let ids = ids.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (cqrs, _store) = cqrs_bank::framework();
                    let start = Instant::now();
                    for (n, id) in ids.iter().enumerate() {
                        cqrs.execute(
                            id,
                            cqrs_bank::BankAccountCommand::Open {
                                owner: format!("owner {n}"),
                                overdraft_limit: 0,
                            },
                        )
                        .await
                        .expect("open");
                    }
                    for _ in 0..4 {
                        for id in &ids {
                            cqrs.execute(id, cqrs_bank::BankAccountCommand::Deposit { amount: 1 })
                                .await
                                .expect("deposit");
                        }
                    }
                    total += start.elapsed();
                }
                total
            }
        });
    });
    group.finish();
}

/// One hot account: deposits on an account that already holds `history` events.
fn hot_account(c: &mut Criterion, rt: &Runtime, sqlite: &Arc<SqliteStore>) {
    let mut group = c.benchmark_group("memory/hot_account");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    for history in [100u64, 10_000, 100_000] {
        let store = Arc::new(MemoryStore::new());
        rt.block_on(seed(store.as_ref(), "hot", history));
        let repo = Repository::<Account, _>::new(store);
        group.bench_with_input(BenchmarkId::new("keel", history), &repo, |b, repo| {
            b.to_async(rt)
                .iter(|| async { repo.execute("hot", DEPOSIT).await.expect("deposit") });
        });
        // The cold path: no cache, every command loads from the latest snapshot (one every
        // 100 events) plus the events after it.
        let uncached = repo.clone().cache_capacity(0);
        group.bench_with_input(
            BenchmarkId::new("keel_uncached_snapshots", history),
            &uncached,
            |b, repo| {
                b.to_async(rt)
                    .iter(|| async { repo.execute("hot", DEPOSIT).await.expect("deposit") });
            },
        );
    }
    for history in [100usize, 20_000] {
        let (cqrs, store) = cqrs_bank::framework();
        cqrs_bank::seed(&store, "hot", history);
        group.bench_with_input(BenchmarkId::new("cqrs-es", history), &cqrs, |b, cqrs| {
            b.to_async(rt).iter(|| async {
                cqrs.execute("hot", cqrs_bank::BankAccountCommand::Deposit { amount: 1 })
                    .await
                    .expect("deposit");
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("sqlite/hot_account");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(1));
    for history in [100u64, 10_000, 100_000] {
        let id = format!("hot-{history}");
        rt.block_on(seed(sqlite.as_ref(), &id, history));
        let repo = Repository::<Account, _>::new(Arc::clone(sqlite));
        group.bench_with_input(BenchmarkId::new("keel", history), &id, |b, id| {
            b.to_async(rt)
                .iter(|| async { repo.execute(id, DEPOSIT).await.expect("deposit") });
        });
        let uncached = repo.clone().cache_capacity(0);
        group.bench_with_input(
            BenchmarkId::new("keel_uncached_snapshots", history),
            &id,
            |b, id| {
                b.to_async(rt)
                    .iter(|| async { uncached.execute(id, DEPOSIT).await.expect("deposit") });
            },
        );
    }
    group.finish();
}

/// SQLite, commands that each open a fresh account: one writer, and 64 writers in steady
/// loops; plain, and with the `expect_new` hint (no read before deciding).
fn fresh_accounts(c: &mut Criterion, rt: &Runtime, sqlite: &Arc<SqliteStore>) {
    let repo = Repository::<Account, _>::new(Arc::clone(sqlite));
    let counter = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group("sqlite/fresh_accounts");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for (name, expect_new) in [("keel", false), ("keel_expect_new", true)] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name}/1_writer"), |b| {
            b.to_async(rt).iter(|| {
                let (repo, counter) = (repo.clone(), Arc::clone(&counter));
                async move {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    repo.execute_with(&format!("fresh-{n}"), open_cmd(n), options(expect_new))
                        .await
                        .expect("open");
                }
            });
        });
        group.throughput(Throughput::Elements(64));
        group.bench_function(format!("{name}/64_writers"), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (repo, counter) = (repo.clone(), Arc::clone(&counter));
                async move {
                    writers(64, iters, &repo, &counter, expect_new, |_, n| {
                        (format!("fresh-{n}"), open_cmd(n))
                    })
                    .await
                }
            });
        });
    }
    group.finish();
}

fn options(expect_new: bool) -> keel::CommandOptions {
    keel::CommandOptions {
        expect_new,
        ..keel::CommandOptions::default()
    }
}

/// Runs `tasks` tasks of `each` commands, the command of task `t`'s `n`-th step given by
/// `command`; returns the time they took together.
async fn writers<S: EventStore>(
    tasks: u64,
    each: u64,
    repo: &Repository<Account, S>,
    counter: &Arc<AtomicU64>,
    expect_new: bool,
    command: fn(u64, u64) -> (String, AccountCommand),
) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (repo, counter) = (repo.clone(), Arc::clone(counter));
            tokio::spawn(async move {
                for _ in 0..each {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let (id, cmd) = command(t, n);
                    repo.execute_with(&id, cmd, options(expect_new))
                        .await
                        .expect("command");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("writer");
    }
    start.elapsed()
}

/// SQLite, 64 tasks depositing into 16 accounts: on fresh accounts and on accounts that
/// already hold 4,000 events each (the end of a 64,000-command run).
fn sixteen_accounts(c: &mut Criterion, rt: &Runtime, sqlite: &Arc<SqliteStore>) {
    let repo = Repository::<Account, _>::new(Arc::clone(sqlite));
    let counter = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group("sqlite/64_tasks_16_accounts");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(64));
    for history in [0u64, 4_000] {
        rt.block_on(async {
            for a in 0..16 {
                seed(sqlite.as_ref(), &format!("sixteen-{history}-{a}"), history).await;
            }
        });
        let command: fn(u64, u64) -> (String, AccountCommand) = if history == 0 {
            |t, _| (format!("sixteen-0-{}", t % 16), DEPOSIT)
        } else {
            |t, _| (format!("sixteen-4000-{}", t % 16), DEPOSIT)
        };
        group.bench_function(BenchmarkId::new("keel", history), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (repo, counter) = (repo.clone(), Arc::clone(&counter));
                async move { writers(64, iters, &repo, &counter, false, command).await }
            });
        });
    }
    group.finish();
}

/// Loading an aggregate of 100, 10,000 and 100,000 events, without a snapshot and with one
/// 50 events behind the head (snapshots every 100 events leave 0 to 99 to fold).
fn loads(c: &mut Criterion, rt: &Runtime, name: &str, store: Arc<dyn EventStore>) {
    let mut group = c.benchmark_group(format!("{name}/load"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for events in [100u64, 10_000, 100_000] {
        let plain = format!("load-{events}");
        let snapped = format!("load-snap-{events}");
        rt.block_on(async {
            seed(store.as_ref(), &plain, events - 1).await;
            seed(store.as_ref(), &snapped, events - 52).await;
            // One command through a repository saving a snapshot every event, then 50 more
            // events written around it.
            Repository::<Account, _>::new(Arc::clone(&store))
                .snapshot_every(1)
                .execute(&snapped, DEPOSIT)
                .await
                .expect("snapshot");
            let stream = StreamId::new("account", &snapped).expect("stream id");
            let more = (0..50)
                .map(|_| {
                    NewEvent::from_event(&AccountEvent::Deposited { amount: 1 }).expect("encode")
                })
                .collect();
            store
                .append(AppendRequest::new(stream, ExpectedVersion::Any, more))
                .await
                .expect("append");
        });
        let repo = Repository::<Account, _>::new(Arc::clone(&store));
        group.throughput(Throughput::Elements(events));
        group.bench_with_input(BenchmarkId::new("no_snapshot", events), &plain, |b, id| {
            b.to_async(rt).iter(|| async {
                let loaded = repo.load(id).await.expect("load");
                assert_eq!(loaded.version.0, events);
            });
        });
        group.bench_with_input(BenchmarkId::new("snapshot", events), &snapped, |b, id| {
            b.to_async(rt).iter(|| async {
                let loaded = repo.load(id).await.expect("load");
                assert_eq!(loaded.version.0, events);
            });
        });
    }
    group.finish();
}

/// The raw ceilings under the SQLite figures, through sqlx on the same machine: a multi-row
/// `INSERT` of 1,000 event-shaped rows in one durable transaction, and a full scan reading every
/// column of 100,000 rows.
fn ceilings(c: &mut Criterion, rt: &Runtime) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raw.db");
    let mut conn = rt.block_on(async {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let mut conn = sqlx::SqliteConnection::connect_with(&opts)
            .await
            .expect("open");
        conn.execute(
            "CREATE TABLE events (part INTEGER NOT NULL, log_offset INTEGER NOT NULL, \
             stream_id TEXT NOT NULL, version INTEGER NOT NULL, event_type TEXT NOT NULL, \
             schema_version INTEGER NOT NULL, payload BLOB NOT NULL, event_id BLOB NOT NULL, \
             timestamp INTEGER NOT NULL, PRIMARY KEY (part, log_offset)) WITHOUT ROWID",
        )
        .await
        .expect("create");
        conn
    });
    let offset = AtomicU64::new(0);
    let mut group = c.benchmark_group("sqlite/ceiling");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    // What one writer's durable commands are bounded by: a one-row transaction, fsync'd.
    group.bench_function("sqlx_one_row_commit", |b| {
        b.iter(|| {
            rt.block_on(async {
                let o = offset.fetch_add(1, Ordering::Relaxed) as i64;
                let mut tx = conn.begin().await.expect("begin");
                sqlx::query(
                    "INSERT INTO events (part, log_offset, stream_id, version, event_type, \
                     schema_version, payload, event_id, timestamp) \
                     VALUES (1, ?, 'acc-1', ?, 'Deposited', 1, ?, ?, 0)",
                )
                .bind(o)
                .bind(o)
                .bind(&br#"{"amount":1}"#[..])
                .bind(uuid::Uuid::now_v7().as_bytes().to_vec())
                .execute(&mut *tx)
                .await
                .expect("insert");
                tx.commit().await.expect("commit");
            });
        });
    });
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("sqlx_multirow_insert_1000", |b| {
        b.iter(|| {
            rt.block_on(async {
                let first = offset.fetch_add(1_000, Ordering::Relaxed);
                let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT INTO events (part, log_offset, stream_id, version, event_type, \
                     schema_version, payload, event_id, timestamp) ",
                );
                q.push_values(first..first + 1_000, |mut b, o| {
                    b.push_bind(0i64)
                        .push_bind(o as i64)
                        .push_bind("acc-1")
                        .push_bind(o as i64)
                        .push_bind("Deposited")
                        .push_bind(1i64)
                        .push_bind(&br#"{"amount":1}"#[..])
                        .push_bind(uuid::Uuid::now_v7().as_bytes().to_vec())
                        .push_bind(0i64);
                });
                let mut tx = conn.begin().await.expect("begin");
                q.build().execute(&mut *tx).await.expect("insert");
                tx.commit().await.expect("commit");
            });
        });
    });
    rt.block_on(async {
        let have = offset.load(Ordering::Relaxed);
        for chunk in (have..100_000).step_by(1_000) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO events (part, log_offset, stream_id, version, event_type, \
                 schema_version, payload, event_id, timestamp) ",
            );
            q.push_values(chunk..(chunk + 1_000).min(100_000), |mut b, o| {
                b.push_bind(0i64)
                    .push_bind(o as i64)
                    .push_bind("acc-1")
                    .push_bind(o as i64)
                    .push_bind("Deposited")
                    .push_bind(1i64)
                    .push_bind(&br#"{"amount":1}"#[..])
                    .push_bind(uuid::Uuid::now_v7().as_bytes().to_vec())
                    .push_bind(0i64);
            });
            q.build().execute(&mut conn).await.expect("insert");
        }
    });
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("sqlx_full_scan_100000", |b| {
        b.iter(|| {
            rt.block_on(async {
                let rows = sqlx::query("SELECT * FROM events WHERE log_offset < 100000")
                    .fetch_all(&mut conn)
                    .await
                    .expect("scan");
                assert_eq!(rows.len(), 100_000);
            });
        });
    });
    group.finish();
}

fn commands(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Arc::new(
        rt.block_on(SqliteStore::open(dir.path().join("bench.db")))
            .expect("open sqlite"),
    );
    distinct_accounts(c, &rt);
    hot_account(c, &rt, &sqlite);
    fresh_accounts(c, &rt, &sqlite);
    sixteen_accounts(c, &rt, &sqlite);
    loads(c, &rt, "memory", Arc::new(MemoryStore::new()));
    loads(c, &rt, "sqlite", sqlite.clone());
    ceilings(c, &rt);
}

criterion_group!(benches, commands);
criterion_main!(benches);
