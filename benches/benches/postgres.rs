//! Keel on PostgreSQL beside its peers, on one server in one run: commands per second on the
//! bank workload through Keel's `Repository` and through `cqrs-es` + `postgres-es` 0.5, with 1
//! writer and with 64 concurrent writers on distinct accounts; appends per second through the
//! `EventStore` (group commit); and the raw ceilings: a bare sqlx batcher (`unnest` insert, no
//! checks) and `unnest` inserts of 1,000 rows; and a projection rebuild end to end, the log
//! in PostgreSQL and the views too (`rebuild_1m/postgres_log/postgres_views/balances`: 1
//! million bank events replayed into the bank's balances view, in events per second; beside
//! it `…/memory_views/balances`, the same log into memory: what reading the log costs).
//!
//! Two command workloads: `deposit`, each writer depositing into its own account again and
//! again (both frameworks snapshot every 100 events, so a load stays short as the accounts
//! grow), and `open`, each command opening a fresh account (every command loads an empty
//! stream).
//!
//! The server is `KEEL_TEST_POSTGRES_URL` when set, else a throwaway cluster started with
//! `scripts/postgres.sh` (installed from Debian's packages when missing) and stopped at the end.
//!
//! `cargo bench -p keel-benches --bench postgres`
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bank::projections::BalancesInMemory;
use bank::{Account, AccountCommand, AccountEvent};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt as _;
use keel::store::postgres::PostgresStore;
use keel::testing::postgres::{self, Cluster};
use keel::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Repository, StreamId};
use keel_projections::store::memory::MemoryViews;
use keel_projections::store::postgres::PostgresViews;
use keel_projections::{Projection, Runner};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};

/// The bank's account on `cqrs-es`, as much of it as the bench runs: opening an account.
mod peer {
    use cqrs_es::event_sink::EventSink;
    use cqrs_es::{Aggregate, DomainEvent};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) enum AccountEvent {
        Opened { owner: String, overdraft_limit: u64 },
        Deposited { amount: u64 },
    }

    impl DomainEvent for AccountEvent {
        fn event_type(&self) -> String {
            match self {
                Self::Opened { .. } => "Opened".into(),
                Self::Deposited { .. } => "Deposited".into(),
            }
        }

        fn event_version(&self) -> String {
            "1".into()
        }
    }

    #[derive(Debug, thiserror::Error)]
    pub(crate) enum AccountError {
        #[error("the account is already open")]
        AlreadyOpen,
        #[error("the account is not open")]
        NotOpen,
    }

    pub(crate) enum AccountCommand {
        Open { owner: String, overdraft_limit: u64 },
        Deposit { amount: u64 },
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    pub(crate) struct Account {
        open: bool,
        overdraft_limit: u64,
        balance: u64,
    }

    impl Aggregate for Account {
        const TYPE: &'static str = "account";
        type Command = AccountCommand;
        type Event = AccountEvent;
        type Error = AccountError;
        type Services = ();

        async fn handle(
            &mut self,
            command: AccountCommand,
            _services: &(),
            sink: &EventSink<Self>,
        ) -> Result<(), AccountError> {
            let event = match command {
                AccountCommand::Open { .. } if self.open => return Err(AccountError::AlreadyOpen),
                AccountCommand::Open {
                    owner,
                    overdraft_limit,
                } => AccountEvent::Opened {
                    owner,
                    overdraft_limit,
                },
                AccountCommand::Deposit { .. } if !self.open => return Err(AccountError::NotOpen),
                AccountCommand::Deposit { amount } => AccountEvent::Deposited { amount },
            };
            sink.write(event, self).await;
            Ok(())
        }

        fn apply(&mut self, event: AccountEvent) {
            match event {
                AccountEvent::Opened {
                    overdraft_limit, ..
                } => {
                    self.open = true;
                    self.overdraft_limit = overdraft_limit;
                }
                AccountEvent::Deposited { amount } => self.balance += amount,
            }
        }
    }
}

/// How many writers the concurrent benches run.
const WRITERS: u64 = 64;

/// Runs `command(writer, n)` once per measured iteration with one writer (number `WRITERS`),
/// and `WRITERS` times per iteration with writers `0..WRITERS` that never wait for each other;
/// `n` counts every command of the group.
fn bench_commands<F, Fut>(c: &mut Criterion, group: &str, rt: &tokio::runtime::Runtime, command: F)
where
    F: Fn(u64, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let counter = Arc::new(AtomicU64::new(0));
    let mut g = c.benchmark_group(group);
    g.measurement_time(Duration::from_secs(8)).sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("1_writer", |b| {
        b.to_async(rt).iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            command(WRITERS, n)
        });
    });
    g.throughput(Throughput::Elements(WRITERS));
    g.bench_function("64_writers", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (counter, command) = (Arc::clone(&counter), command.clone());
            async move {
                let start = Instant::now();
                let writers: Vec<_> = (0..WRITERS)
                    .map(|writer| {
                        let (counter, command) = (Arc::clone(&counter), command.clone());
                        tokio::spawn(async move {
                            for _ in 0..iters {
                                command(writer, counter.fetch_add(1, Ordering::Relaxed)).await;
                            }
                        })
                    })
                    .collect();
                for w in writers {
                    w.await.expect("writer");
                }
                start.elapsed()
            }
        });
    });
    g.finish();
}

/// The bare ceiling of group commit: a queue and one task inserting whatever is queued with one
/// `unnest` statement per transaction; no check of any kind.
fn raw_batcher(
    pool: PgPool,
    table: String,
) -> mpsc::Sender<(String, Vec<u8>, oneshot::Sender<()>)> {
    let (tx, mut rx) = mpsc::channel::<(String, Vec<u8>, oneshot::Sender<()>)>(4096);
    tokio::spawn(async move {
        let mut conn = pool.acquire().await.expect("a connection");
        let sql = format!(
            "INSERT INTO {table} (stream_id, payload) SELECT * FROM unnest($1::text[], $2::bytea[])"
        );
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 512 {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let (streams, payloads): (Vec<String>, Vec<Vec<u8>>) =
                batch.iter().map(|(s, p, _)| (s.clone(), p.clone())).unzip();
            sqlx::Executor::execute(&mut *conn, "BEGIN")
                .await
                .expect("BEGIN");
            sqlx::query(&sql)
                .bind(streams)
                .bind(payloads)
                .execute(&mut *conn)
                .await
                .expect("insert");
            sqlx::Executor::execute(&mut *conn, "COMMIT")
                .await
                .expect("COMMIT");
            for (_, _, reply) in batch {
                let _ = reply.send(());
            }
        }
    });
    tx
}

/// Whether criterion's command line selects any of the benches `ids` (no filter selects every
/// bench), so the rebuild's log of a million events is only written when a rebuild runs. The
/// filter is read as plain text, as a part of an id.
fn selected(ids: &[&str]) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty()
        || filters
            .iter()
            .any(|f| ids.iter().any(|id| id.contains(f.as_str())))
}

/// Events in the rebuild's log, over `REBUILD_ACCOUNTS` accounts, as the SQLite rebuild bench
/// (`benches/projections.rs`) has them.
const REBUILD_EVENTS: u64 = 1_000_000;
const REBUILD_ACCOUNTS: u64 = 1_000;
/// Events per append while filling the log.
const PER_APPEND: u64 = 500;

/// Fills `store` with the rebuild's log: an `Opened` then deposits and every fifth a withdrawal,
/// per account, written by multi-event appends, 16 at a time (group commit).
async fn fill(store: &PostgresStore) {
    let per_account = REBUILD_EVENTS / REBUILD_ACCOUNTS;
    let appends = (0..REBUILD_ACCOUNTS).flat_map(|a| {
        (0..per_account)
            .step_by(PER_APPEND as usize)
            .map(move |first| (a, first))
    });
    futures::stream::iter(appends)
        .map(|(a, first)| async move {
            let stream = StreamId::new("account", format!("acc-{a}")).expect("stream id");
            let events = (first..(first + PER_APPEND).min(per_account))
                .map(|i| {
                    let event = if i == 0 {
                        AccountEvent::Opened {
                            owner: format!("owner {a}"),
                            overdraft_limit: 0,
                        }
                    } else if i % 5 == 0 {
                        AccountEvent::Withdrawn { amount: 3 }
                    } else {
                        AccountEvent::Deposited { amount: 7 }
                    };
                    NewEvent::from_event(&event).expect("encode")
                })
                .collect::<Vec<_>>();
            store
                .append(AppendRequest::new(stream, ExpectedVersion::Any, events))
                .await
                .expect("append");
        })
        .buffer_unordered(16)
        .collect::<()>()
        .await;
}

/// Times `runner`'s side-by-side rebuild of the whole log as `rebuild_1m/<name>`.
fn bench_rebuild<P: Projection>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    runner: &Runner<P>,
) {
    keel_benches::bench_rebuild(c, rt, name, runner, REBUILD_EVENTS, Duration::from_secs(30));
}

/// Rebuilds the bank's balances view from a PostgreSQL log of a million events into
/// PostgreSQL views (the figure the target names), and into memory (the log's share of it):
/// throughput in events per second.
fn rebuild(c: &mut Criterion, rt: &tokio::runtime::Runtime, url: &str) {
    const POSTGRES_VIEWS: &str = "postgres_log/postgres_views/balances";
    const MEMORY_VIEWS: &str = "postgres_log/memory_views/balances";
    if !selected(&[
        &format!("rebuild_1m/{POSTGRES_VIEWS}"),
        &format!("rebuild_1m/{MEMORY_VIEWS}"),
    ]) {
        return;
    }
    let log = rt
        .block_on(
            PostgresStore::builder(url)
                .schema(postgres::unique_name("bench_log"))
                .open(),
        )
        .expect("open the PostgreSQL log");
    let started = Instant::now();
    rt.block_on(fill(&log));
    println!(
        "filled the PostgreSQL log with {REBUILD_EVENTS} events in {:.1?}",
        started.elapsed()
    );
    let log: Arc<dyn EventStore> = Arc::new(log);
    let views = Arc::new(
        rt.block_on(PostgresViews::connect_schema(
            url,
            &postgres::unique_name("bench_views"),
        ))
        .expect("open the PostgreSQL views"),
    );
    bench_rebuild(
        c,
        rt,
        POSTGRES_VIEWS,
        &Runner::new(
            bank::projections::postgres::Balances,
            Arc::clone(&log),
            Arc::clone(&views),
        ),
    );
    bench_rebuild(
        c,
        rt,
        MEMORY_VIEWS,
        &Runner::new(
            BalancesInMemory,
            Arc::clone(&log),
            Arc::new(MemoryViews::default()),
        ),
    );
    rt.block_on(views.close());
}

fn postgres(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // A cluster of its own when no server is given; dropped (stopped) at the end.
    let cluster = std::env::var(postgres::URL_VAR).is_err().then(|| {
        rt.block_on(Cluster::start(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/postgres.sh"
        )))
    });
    let url = cluster
        .as_ref()
        .map_or_else(postgres::url, |c| c.url().to_owned());
    let pool = rt
        .block_on(PgPoolOptions::new().max_connections(4).connect(&url))
        .expect("connect to the bench server");

    // Keel: commands through the repository, appends through the store.
    let store = Arc::new(
        rt.block_on(
            PostgresStore::builder(&url)
                .schema(postgres::unique_name("bench"))
                .open(),
        )
        .expect("open the PostgreSQL store"),
    );
    let repo = Repository::<Account, PostgresStore>::new(Arc::clone(&store));
    rt.block_on(async {
        for writer in 0..=WRITERS {
            repo.execute(
                &format!("own-{writer}"),
                AccountCommand::Open {
                    owner: format!("writer {writer}"),
                    overdraft_limit: 0,
                },
            )
            .await
            .expect("open a writer's account");
        }
    });
    let deposits = repo.clone();
    bench_commands(c, "command/keel-postgres/deposit", &rt, move |writer, _| {
        let repo = deposits.clone();
        async move {
            repo.execute(
                &format!("own-{writer}"),
                AccountCommand::Deposit { amount: 1 },
            )
            .await
            .expect("deposit");
        }
    });
    bench_commands(c, "command/keel-postgres/open", &rt, move |_, n| {
        let repo = repo.clone();
        async move {
            repo.execute(
                &format!("new-{n}"),
                AccountCommand::Open {
                    owner: format!("owner {n}"),
                    overdraft_limit: 0,
                },
            )
            .await
            .expect("open");
        }
    });

    // cqrs-es + postgres-es: the same command, its tables in a schema of their own.
    let peer_schema = postgres::unique_name("bench_pges");
    rt.block_on(async {
        for sql in [
            format!("CREATE SCHEMA {peer_schema}"),
            format!(
                "CREATE TABLE {peer_schema}.events (aggregate_type text NOT NULL, \
                 aggregate_id text NOT NULL, sequence bigint CHECK (sequence >= 0) NOT NULL, \
                 event_type text NOT NULL, event_version text NOT NULL, payload json NOT NULL, \
                 metadata json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, sequence))"
            ),
            format!(
                "CREATE TABLE {peer_schema}.snapshots (aggregate_type text NOT NULL, \
                 aggregate_id text NOT NULL, last_sequence bigint NOT NULL, \
                 current_snapshot bigint NOT NULL, payload json NOT NULL, \
                 PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))"
            ),
        ] {
            sqlx::Executor::execute(&pool, sql.as_str())
                .await
                .expect("create the peer's tables");
        }
    });
    let peer_pool = rt.block_on(postgres_es::default_postgress_pool(&url));
    let repository = || {
        postgres_es::PostgresEventRepository::new(peer_pool.clone()).with_tables(
            &format!("{peer_schema}.events"),
            &format!("{peer_schema}.snapshots"),
        )
    };
    // Snapshots every 100 events, as the bank's `Account` does on Keel.
    let cqrs = Arc::new(cqrs_es::CqrsFramework::new(
        cqrs_es::persist::PersistedEventStore::<_, peer::Account>::new_snapshot_store(
            repository(),
            100,
        ),
        vec![],
        (),
    ));
    rt.block_on(async {
        for writer in 0..=WRITERS {
            cqrs.execute(
                &format!("own-{writer}"),
                peer::AccountCommand::Open {
                    owner: format!("writer {writer}"),
                    overdraft_limit: 0,
                },
            )
            .await
            .expect("open a writer's account");
        }
    });
    let deposits = Arc::clone(&cqrs);
    bench_commands(c, "command/postgres-es/deposit", &rt, move |writer, _| {
        let cqrs = Arc::clone(&deposits);
        async move {
            cqrs.execute(
                &format!("own-{writer}"),
                peer::AccountCommand::Deposit { amount: 1 },
            )
            .await
            .expect("deposit");
        }
    });
    let cqrs = Arc::new(cqrs_es::CqrsFramework::new(
        cqrs_es::persist::PersistedEventStore::<_, peer::Account>::new_event_store(repository()),
        vec![],
        (),
    ));
    bench_commands(c, "command/postgres-es/open", &rt, move |_, n| {
        let cqrs = Arc::clone(&cqrs);
        async move {
            cqrs.execute(
                &format!("new-{n}"),
                peer::AccountCommand::Open {
                    owner: format!("owner {n}"),
                    overdraft_limit: 0,
                },
            )
            .await
            .expect("open");
        }
    });

    // Appends through the EventStore: group commit.
    let appender = Arc::clone(&store);
    bench_commands(c, "append/keel-postgres", &rt, move |_, n| {
        let store = Arc::clone(&appender);
        async move {
            let stream = StreamId::new("bench", format!("s{}", n % 10_000)).expect("stream id");
            let event = NewEvent::raw("Deposited", 1, format!(r#"{{"amount":{n}}}"#).into_bytes());
            store
                .append(AppendRequest::new(
                    stream,
                    ExpectedVersion::Any,
                    vec![event],
                ))
                .await
                .expect("append");
        }
    });

    // The raw ceilings.
    let raw = postgres::unique_name("bench_raw");
    rt.block_on(async {
        for sql in [
            format!("CREATE SCHEMA {raw}"),
            format!("CREATE TABLE {raw}.events (id bigserial PRIMARY KEY, stream_id text NOT NULL, payload bytea NOT NULL)"),
        ] {
            sqlx::Executor::execute(&pool, sql.as_str())
                .await
                .expect("create the raw table");
        }
    });
    let batcher = rt.block_on(async { raw_batcher(pool.clone(), format!("{raw}.events")) });
    bench_commands(c, "raw/sqlx-batcher", &rt, move |_, n| {
        let batcher = batcher.clone();
        async move {
            let (tx, rx) = oneshot::channel();
            batcher
                .send((
                    format!("s{}", n % 10_000),
                    format!(r#"{{"amount":{n}}}"#).into_bytes(),
                    tx,
                ))
                .await
                .expect("queue");
            rx.await.expect("committed");
        }
    });

    let mut g = c.benchmark_group("raw/unnest-insert");
    g.measurement_time(Duration::from_secs(8)).sample_size(10);
    g.throughput(Throughput::Elements(1000));
    let sql = format!(
        "INSERT INTO {raw}.events (stream_id, payload) SELECT * FROM unnest($1::text[], $2::bytea[])"
    );
    g.bench_function("1000_rows", |b| {
        b.to_async(&rt).iter(|| async {
            let streams: Vec<String> = (0..1000).map(|i| format!("s{i}")).collect();
            let payloads: Vec<Vec<u8>> = (0..1000)
                .map(|i| format!(r#"{{"amount":{i}}}"#).into_bytes())
                .collect();
            sqlx::query(&sql)
                .bind(streams)
                .bind(payloads)
                .execute(&pool)
                .await
                .expect("insert 1,000 rows");
        });
    });
    g.finish();

    let stats = store.stats();
    println!(
        "keel-postgres group commit: {} appends in {} transactions ({:.1} per commit)",
        stats.appends,
        stats.commits,
        stats.appends as f64 / stats.commits.max(1) as f64
    );
    rt.block_on(store.close());

    rebuild(c, &rt, &url);
    drop(cluster);
}

criterion_group!(benches, postgres);
criterion_main!(benches);
