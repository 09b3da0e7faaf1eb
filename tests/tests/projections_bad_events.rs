//! Bad events on the query side: an event that does not decode and an event the handler fails
//! on stop the projection by default with an error naming the event — everything before it
//! applied, nothing after — or, when configured, are parked and skipped while everything
//! else is applied exactly once; a parked event is applied by `retry_parked` once fixed.
//! Handler failures are checked on both view stores (SQLite and memory).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bank::projections::{Balances, StatementView, read_balances};
use bank::{AccountEvent, Bank};
use common::{
    account_stream, account_topic, active_checkpoints, append_raw, before, expected_balances,
    expected_movements, fill_log, guard, read_log, read_movements,
};
use keel::store::sqlite::SqliteStore;
use keel::{EventStore, NewEvent, RecordedEvent, StreamVersion, Topic};
use keel_projections::store::memory::{MemoryBatch, MemoryViews};
use keel_projections::store::sqlite::{SqliteBatch, SqliteViews};
use keel_projections::{
    BoxError, Envelope, Error, EventRef, OnBadEvent, Projection, Runner, RunnerConfig,
};
use sqlx::Row as _;

/// Small batches, so that the bad event sits inside a batch with good ones around it.
fn config(on_bad_event: OnBadEvent) -> RunnerConfig {
    RunnerConfig {
        batch_size: 16,
        on_bad_event,
        ..RunnerConfig::default()
    }
}

/// A log on 2 partitions with a good prefix (20 accounts of 30 events).
async fn prefix_log(
    dir: &tempfile::TempDir,
) -> anyhow::Result<(Arc<SqliteStore>, Arc<dyn EventStore>)> {
    let store = Arc::new(
        SqliteStore::builder(dir.path().join("log.db"))
            .default_partitions(2)
            .open()
            .await?,
    );
    let log: Arc<dyn EventStore> = store.clone();
    fill_log(&log, 0..20, 30, 1).await?;
    Ok((store, log))
}

/// Where the bad event landed.
fn event_ref(appended: &keel::Appended, event_type: &str) -> anyhow::Result<EventRef> {
    Ok(EventRef {
        topic: account_topic(),
        partition: appended.partition,
        offset: *appended
            .offsets
            .first()
            .ok_or_else(|| anyhow::anyhow!("nothing appended"))?,
        stream: appended.stream.clone(),
        version: appended.first_version,
        event_type: event_type.to_owned(),
    })
}

/// Appends a `Deposited` whose amount is not a number to `acc-0007`, then good events after
/// it: to the same account and to 20 new accounts on both partitions.
async fn append_undecodable(log: &Arc<dyn EventStore>) -> anyhow::Result<EventRef> {
    let bad = append_raw(
        log.as_ref(),
        "acc-0007",
        vec![NewEvent::raw(
            "Deposited",
            1,
            br#"{"amount":"lots"}"#.to_vec(),
        )],
    )
    .await?;
    append_raw(
        log.as_ref(),
        "acc-0007",
        vec![NewEvent::from_event(&AccountEvent::Deposited { amount: 5 })?; 3],
    )
    .await?;
    fill_log(log, 20..40, 30, 2).await?;
    event_ref(&bad, "Deposited")
}

/// The log without the record at `bad`.
fn without<'a>(
    records: &'a [RecordedEvent],
    bad: &'a EventRef,
) -> impl Iterator<Item = &'a RecordedEvent> + 'a {
    records
        .iter()
        .filter(|r| !(r.partition() == bad.partition && r.offset() == bad.offset))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_does_not_decode_stops_the_projection_naming_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, log) = prefix_log(&dir).await?;
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    let runner = Runner::new(StatementView, Arc::clone(&log), Arc::clone(&views))
        .config(config(OnBadEvent::Stop));
    guard("the good prefix", runner.catch_up()).await??;
    let bad = append_undecodable(&log).await?;

    let error = guard("catch_up", runner.catch_up())
        .await?
        .expect_err("the projection stops on the bad event");
    let text = error.to_string();
    let Error::Decode {
        projection,
        event,
        source,
    } = &error
    else {
        anyhow::bail!("expected a decode error, got {error:?}");
    };
    assert_eq!(projection, "statement");
    assert_eq!(event, &bad);
    assert_eq!(bad.stream, account_stream("acc-0007"));
    assert_eq!(bad.version, StreamVersion(31));
    for part in [
        "statement".to_owned(),
        r#""Deposited""#.to_owned(),
        "account/acc-0007".to_owned(),
        "version 31".to_owned(),
        format!("partition {}", bad.partition),
        format!("offset {}", bad.offset),
    ] {
        assert!(text.contains(&part), "{text:?} names {part}");
    }
    assert!(
        source.to_string().contains("payload does not decode"),
        "{source}"
    );

    // Everything before it applied, nothing after it (in its partition).
    let records = read_log(log.as_ref()).await?;
    let checkpoints = active_checkpoints(views.as_ref(), log.as_ref(), "statement").await?;
    assert_eq!(checkpoints.get(&bad.partition.0), Some(&bad.offset.0));
    let movements = read_movements(&views).await?;
    assert_eq!(
        movements,
        expected_movements(before(&records, &checkpoints))?
    );
    let bad_offset = i64::try_from(bad.offset.0)?;
    assert!(
        !movements
            .iter()
            .any(|m| m.4 == i64::from(bad.partition.0) && m.5 >= bad_offset),
        "nothing at or after the bad event"
    );
    let status = runner.status().await?;
    assert!(status.lag > 0, "{status:?}");
    assert!(status.parked.is_empty(), "{status:?}");

    // It stays stopped there: starting again fails on the same event and skips nothing.
    let again = guard("catch_up again", runner.catch_up()).await?;
    assert!(
        matches!(&again, Err(Error::Decode { event, .. }) if *event == bad),
        "{again:?}"
    );
    assert_eq!(
        active_checkpoints(views.as_ref(), log.as_ref(), "statement").await?,
        checkpoints
    );
    assert_eq!(read_movements(&views).await?, movements);
    views.close().await;
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_build_that_stops_on_a_bad_event_shows_readers_no_half_view() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let (store, log) = prefix_log(&dir).await?;
    let bad = append_undecodable(&log).await?;
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    let runner = Runner::new(Balances, Arc::clone(&log), Arc::clone(&views))
        .config(config(OnBadEvent::Stop));
    let stopped = guard("catch_up", runner.catch_up()).await?;
    assert!(
        matches!(&stopped, Err(Error::Decode { event, .. }) if *event == bad),
        "{stopped:?}"
    );
    assert_eq!(views.table("balances", "accounts").await?, None);
    assert_eq!(read_balances(&views).await?, []);
    views.close().await;
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_park_an_event_that_does_not_decode_is_parked_and_skipped() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, log) = prefix_log(&dir).await?;
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    let statement = Runner::new(StatementView, Arc::clone(&log), Arc::clone(&views))
        .config(config(OnBadEvent::Park));
    let balances = Runner::new(Balances, Arc::clone(&log), Arc::clone(&views))
        .config(config(OnBadEvent::Park));
    guard("the good prefix", statement.catch_up()).await??;
    let bad = append_undecodable(&log).await?;
    guard("statement", statement.catch_up()).await??;
    guard("balances", balances.catch_up()).await??;

    let records = read_log(log.as_ref()).await?;
    for status in [statement.status().await?, balances.status().await?] {
        assert_eq!(status.lag, 0, "{status:?}");
        let parked: Vec<&EventRef> = status.parked.iter().map(|p| &p.event).collect();
        assert_eq!(parked, [&bad], "{status:?}");
        let error = &status.parked[0].error;
        assert!(
            error.contains("payload does not decode") && error.contains("lots"),
            "{error}"
        );
    }
    assert_eq!(
        read_movements(&views).await?,
        expected_movements(without(&records, &bad))?
    );
    assert_eq!(
        read_balances(&views).await?,
        expected_balances(without(&records, &bad))?
    );

    // Retrying cannot help an event that still does not decode: it stays parked.
    assert_eq!(guard("retry", statement.retry_parked()).await??, 0);
    assert_eq!(statement.status().await?.parked.len(), 1);
    views.close().await;
    store.close().await;
    Ok(())
}

/// The amount the fragile projections fail on while broken.
const POISON: u64 = 777_777;

/// What a fragile projection recorded per event: account, signed amount, times applied.
type Applied = BTreeMap<(u32, u64), (String, i64, u32)>;

fn signed(event: &AccountEvent) -> Result<i64, BoxError> {
    Ok(match event {
        AccountEvent::Deposited { amount } => i64::try_from(*amount)?,
        AccountEvent::Withdrawn { amount } => -i64::try_from(*amount)?,
        AccountEvent::Opened { .. } | AccountEvent::Closed => 0,
    })
}

/// Fails on a deposit of [`POISON`] while `broken` is set.
fn check(broken: &AtomicBool, event: &AccountEvent) -> Result<(), BoxError> {
    if broken.load(Ordering::SeqCst) && *event == (AccountEvent::Deposited { amount: POISON }) {
        return Err(format!("cannot take a deposit of {POISON}").into());
    }
    Ok(())
}

/// Records every event it applies with a count of applications, in SQLite; fails on the
/// poison while broken, after writing the events before it in the batch.
struct FragileSql {
    broken: Arc<AtomicBool>,
}

impl Projection for FragileSql {
    type Event = AccountEvent;
    type Store = SqliteViews;
    const NAME: &'static str = "fragile";

    fn topics(&self) -> Vec<Topic> {
        vec![account_topic()]
    }

    async fn setup(&self, view: &mut SqliteBatch) -> Result<(), BoxError> {
        let sql = format!(
            "CREATE TABLE {} (part INTEGER NOT NULL, off INTEGER NOT NULL, account TEXT NOT NULL, \
             amount INTEGER NOT NULL, times INTEGER NOT NULL, PRIMARY KEY (part, off))",
            view.table("applied")
        );
        sqlx::query(&sql).execute(view.conn()).await?;
        Ok(())
    }

    async fn apply(
        &self,
        view: &mut SqliteBatch,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        let table = view.table("applied");
        for e in events {
            check(&self.broken, &e.event)?;
            sqlx::query(&format!(
                "INSERT INTO {table} (part, off, account, amount, times) VALUES (?, ?, ?, ?, 1) \
                 ON CONFLICT (part, off) DO UPDATE SET times = times + 1"
            ))
            .bind(i64::from(e.partition().0))
            .bind(i64::try_from(e.offset().0)?)
            .bind(e.id())
            .bind(signed(&e.event)?)
            .execute(view.conn())
            .await?;
        }
        Ok(())
    }
}

/// [`FragileSql`] in memory.
struct FragileMem {
    broken: Arc<AtomicBool>,
}

impl Projection for FragileMem {
    type Event = AccountEvent;
    type Store = MemoryViews<Applied>;
    const NAME: &'static str = "fragile";

    fn topics(&self) -> Vec<Topic> {
        vec![account_topic()]
    }

    async fn apply(
        &self,
        view: &mut MemoryBatch<Applied>,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        for e in events {
            check(&self.broken, &e.event)?;
            view.entry((e.partition().0, e.offset().0))
                .or_insert_with(|| (e.id().to_owned(), 0, 0));
            let entry = view
                .get_mut(&(e.partition().0, e.offset().0))
                .ok_or("just inserted")?;
            entry.1 = signed(&e.event)?;
            entry.2 += 1;
        }
        Ok(())
    }
}

/// What a fragile view must hold after applying `records` once each.
fn expected_applied<'a>(
    records: impl IntoIterator<Item = &'a RecordedEvent>,
) -> anyhow::Result<Applied> {
    records
        .into_iter()
        .map(|r| {
            let event: AccountEvent = r.decode()?;
            Ok((
                (r.partition().0, r.offset().0),
                (
                    r.stream.id().to_owned(),
                    signed(&event).map_err(|e| anyhow::anyhow!("{e}"))?,
                    1,
                ),
            ))
        })
        .collect()
}

async fn read_applied_sql(views: &SqliteViews) -> anyhow::Result<Applied> {
    let table = views
        .table("fragile", "applied")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no active fragile view"))?;
    let rows = sqlx::query(&format!(
        "SELECT part, off, account, amount, times FROM {table}"
    ))
    .fetch_all(views.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                (
                    u32::try_from(r.try_get::<i64, _>(0)?)?,
                    u64::try_from(r.try_get::<i64, _>(1)?)?,
                ),
                (
                    r.try_get(2)?,
                    r.try_get(3)?,
                    u32::try_from(r.try_get::<i64, _>(4)?)?,
                ),
            ))
        })
        .collect()
}

async fn read_applied_mem(views: &MemoryViews<Applied>) -> anyhow::Result<Applied> {
    views
        .read("fragile", Applied::clone)
        .await
        .ok_or_else(|| anyhow::anyhow!("no active fragile view"))
}

/// Appends a good prefix, has `runner` catch up on it, then appends the poison (a deposit of
/// [`POISON`] to `acc-0005`, through the bank) and more good events after it.
async fn poisoned_log<P: Projection>(
    log: &Arc<dyn EventStore>,
    runner: &Runner<P>,
) -> anyhow::Result<EventRef> {
    guard("the good prefix", runner.catch_up()).await??;
    let bank = Bank::<dyn EventStore>::new(Arc::clone(log));
    let committed = bank.deposit("acc-0005", POISON, None).await?;
    let poison = committed
        .events
        .first()
        .ok_or_else(|| anyhow::anyhow!("the deposit wrote nothing"))?;
    bank.deposit("acc-0005", 3, None).await?;
    fill_log(log, 20..40, 30, 2).await?;
    Ok(EventRef {
        topic: poison.position.topic.clone(),
        partition: poison.position.partition,
        offset: poison.position.offset,
        stream: account_stream("acc-0005"),
        version: poison.version,
        event_type: "Deposited".to_owned(),
    })
}

/// The stop case, for either store: the error names the poison; the view holds exactly the
/// events before the checkpoints, each applied once, and its partition's checkpoint is the
/// poison's offset.
async fn stops_on_the_poison<P: Projection>(
    runner: &Runner<P>,
    log: &dyn EventStore,
    poison: &EventRef,
    applied: impl AsyncFn() -> anyhow::Result<Applied>,
) -> anyhow::Result<()> {
    let error = guard("catch_up", runner.catch_up())
        .await?
        .expect_err("the projection stops on the poison");
    let text = error.to_string();
    let Error::Handler {
        projection,
        event,
        source,
    } = &error
    else {
        anyhow::bail!("expected a handler error, got {error:?}");
    };
    assert_eq!(projection, "fragile");
    assert_eq!(event, poison);
    assert!(
        text.starts_with(
            r#"projection fragile failed on event "Deposited" of stream account/acc-0005"#
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!("offset {}", poison.offset)),
        "{text}"
    );
    assert!(source.to_string().contains("777777"), "{source}");

    let records = read_log(log).await?;
    let checkpoints = active_checkpoints(runner.views().as_ref(), log, "fragile").await?;
    assert_eq!(checkpoints.get(&poison.partition.0), Some(&poison.offset.0));
    assert_eq!(
        applied().await?,
        expected_applied(before(&records, &checkpoints))?
    );
    Ok(())
}

/// The park case, for either store: parked and skipped, everything else applied exactly
/// once; fixed and retried, it is applied once and leaves the parked list.
async fn parks_the_poison<P: Projection>(
    runner: &Runner<P>,
    broken: &AtomicBool,
    log: &dyn EventStore,
    poison: &EventRef,
    applied: impl AsyncFn() -> anyhow::Result<Applied>,
) -> anyhow::Result<()> {
    guard("catch_up", runner.catch_up()).await??;
    let records = read_log(log).await?;
    let status = runner.status().await?;
    assert_eq!(status.lag, 0, "{status:?}");
    assert_eq!(status.parked.len(), 1, "{status:?}");
    assert_eq!(&status.parked[0].event, poison);
    assert!(status.parked[0].error.contains("777777"), "{status:?}");
    assert_eq!(
        applied().await?,
        expected_applied(without(&records, poison))?,
        "everything but the poison, each once"
    );

    // Still broken: a retry fails again and changes nothing.
    assert_eq!(guard("retry", runner.retry_parked()).await??, 0);
    assert_eq!(runner.status().await?.parked.len(), 1);
    assert_eq!(
        applied().await?,
        expected_applied(without(&records, poison))?
    );

    broken.store(false, Ordering::SeqCst);
    assert_eq!(guard("retry", runner.retry_parked()).await??, 1);
    let status = runner.status().await?;
    assert_eq!(status.parked, []);
    assert_eq!(status.lag, 0);
    assert_eq!(
        applied().await?,
        expected_applied(&records)?,
        "now the poison too, once"
    );
    guard("catch_up again", runner.catch_up()).await??;
    assert_eq!(
        applied().await?,
        expected_applied(&records)?,
        "nothing applied twice"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_failure_stops_the_sqlite_projection_naming_the_event() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, log) = prefix_log(&dir).await?;
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    let broken = Arc::new(AtomicBool::new(true));
    let runner = Runner::new(
        FragileSql {
            broken: Arc::clone(&broken),
        },
        Arc::clone(&log),
        Arc::clone(&views),
    )
    .config(config(OnBadEvent::Stop));
    let poison = poisoned_log(&log, &runner).await?;
    stops_on_the_poison(&runner, log.as_ref(), &poison, async || {
        read_applied_sql(&views).await
    })
    .await?;
    views.close().await;
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_park_a_handler_failure_is_parked_in_sqlite_and_the_rest_applied_once()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, log) = prefix_log(&dir).await?;
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    let broken = Arc::new(AtomicBool::new(true));
    let runner = Runner::new(
        FragileSql {
            broken: Arc::clone(&broken),
        },
        Arc::clone(&log),
        Arc::clone(&views),
    )
    .config(config(OnBadEvent::Park));
    let poison = poisoned_log(&log, &runner).await?;
    parks_the_poison(&runner, &broken, log.as_ref(), &poison, async || {
        read_applied_sql(&views).await
    })
    .await?;
    views.close().await;
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_failure_stops_the_memory_projection_naming_the_event() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, log) = prefix_log(&dir).await?;
    let views = Arc::new(MemoryViews::<Applied>::new());
    let broken = Arc::new(AtomicBool::new(true));
    let runner = Runner::new(
        FragileMem {
            broken: Arc::clone(&broken),
        },
        Arc::clone(&log),
        Arc::clone(&views),
    )
    .config(config(OnBadEvent::Stop));
    let poison = poisoned_log(&log, &runner).await?;
    stops_on_the_poison(&runner, log.as_ref(), &poison, async || {
        read_applied_mem(&views).await
    })
    .await?;
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_park_a_handler_failure_is_parked_in_memory_and_the_rest_applied_once()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, log) = prefix_log(&dir).await?;
    let views = Arc::new(MemoryViews::<Applied>::new());
    let broken = Arc::new(AtomicBool::new(true));
    let runner = Runner::new(
        FragileMem {
            broken: Arc::clone(&broken),
        },
        Arc::clone(&log),
        Arc::clone(&views),
    )
    .config(config(OnBadEvent::Park));
    let poison = poisoned_log(&log, &runner).await?;
    parks_the_poison(&runner, &broken, log.as_ref(), &poison, async || {
        read_applied_mem(&views).await
    })
    .await?;
    store.close().await;
    Ok(())
}

/// The handler fails on the poison and the very next event in the batch does not decode: the
/// projection must stop on the first of the two, naming it, with everything before it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_failure_right_before_an_undecodable_event_is_reported_first()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, log) = prefix_log(&dir).await?;
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    let broken = Arc::new(AtomicBool::new(true));
    let runner = Runner::new(
        FragileSql {
            broken: Arc::clone(&broken),
        },
        Arc::clone(&log),
        Arc::clone(&views),
    )
    .config(RunnerConfig {
        batch_size: 4096,
        ..config(OnBadEvent::Stop)
    });
    guard("the good prefix", runner.catch_up()).await??;
    // A good deposit, the poison, then an event that does not decode: one batch.
    let bank = Bank::<dyn EventStore>::new(Arc::clone(&log));
    bank.deposit("acc-0005", 1, None).await?;
    let committed = bank.deposit("acc-0005", POISON, None).await?;
    let poison = committed
        .events
        .first()
        .ok_or_else(|| anyhow::anyhow!("the deposit wrote nothing"))?;
    append_raw(
        log.as_ref(),
        "acc-0005",
        vec![NewEvent::raw(
            "Deposited",
            1,
            br#"{"amount":"lots"}"#.to_vec(),
        )],
    )
    .await?;

    let stopped = guard("catch_up", runner.catch_up()).await?;
    assert!(
        matches!(&stopped, Err(Error::Handler { event, .. }) if event.offset == poison.position.offset),
        "the poison comes first and is the one named: {stopped:?}"
    );
    let records = read_log(log.as_ref()).await?;
    let checkpoints = active_checkpoints(views.as_ref(), log.as_ref(), "fragile").await?;
    assert_eq!(
        checkpoints.get(&poison.position.partition.0),
        Some(&poison.position.offset.0),
        "everything before the poison is applied"
    );
    assert_eq!(
        read_applied_sql(&views).await?,
        expected_applied(before(&records, &checkpoints))?
    );
    views.close().await;
    store.close().await;
    Ok(())
}
