//! Bad events on the query side, through the bank's projections on SQLite: an event that does
//! not decode stops the projection by default with an error naming the event — everything
//! before it applied, nothing after — and a first build stopped so shows readers no half view;
//! a handler failure right before an undecodable event is the one reported. (Handler failures
//! stopping or parked, and undecodable events parked, on every view store, are cases of the
//! view-store suite, `keel_tests::views`.)

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bank::projections::{Balances, StatementView, read_balances};
use bank::{AccountEvent, Bank};
use common::{
    account_stream, account_topic, active_checkpoints, append_raw, before, expected_movements,
    fill_log, guard, read_log, read_movements,
};
use keel::store::sqlite::SqliteStore;
use keel::{EventStore, NewEvent, RecordedEvent, StreamVersion, Topic};
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
