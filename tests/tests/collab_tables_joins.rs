//! Tables from streams and stream–table joins: latest value per key, rebuilt by replay; an
//! event whose row arrives later waits and is joined once; a row that never comes (or comes
//! after the deadline) hands the event to `missing`; too many waiting events stop the runner
//! naming the event; a replay from offset 0 emits nothing twice.

mod collab;

use std::sync::Arc;
use std::time::Duration;

use collab::{CustomerEvent, Outbox, RequestEvent, outbox, plus};
use keel::store::EventStore;
use keel::{CommandOptions, Repository};
use keel_projections::keyed::Keyed;
use keel_projections::store::memory::MemoryViews;
use keel_projections::store::sqlite::SqliteViews;
use keel_projections::{
    BoxError, CancellationToken, Envelope, Inputs, Join, JoinView, Missing, Rows, Runner,
    RunnerConfig, Table, TableView, Tables, Ticker,
};

/// Customer names, from the `customer` topic; `Left` deletes the row.
struct Customers;

impl Table for Customers {
    type Input = CustomerEvent;
    type Row = String;
    const NAME: &'static str = "customers";

    fn inputs(&self) -> Inputs<CustomerEvent> {
        Inputs::new().topic(collab::customer_topic(), |e| e)
    }

    fn key(&self, input: &Envelope<CustomerEvent>) -> Option<String> {
        Some(input.id().to_owned())
    }

    fn update(&self, _: Option<String>, input: &Envelope<CustomerEvent>) -> Option<String> {
        match &input.event {
            CustomerEvent::Named { name } => Some(name.clone()),
            CustomerEvent::Left => None,
        }
    }
}

/// Greets each request's customer by name, through the outbox.
struct Greetings {
    outbox: Repository<Outbox, dyn EventStore>,
}

impl Join for Greetings {
    type Input = RequestEvent;
    type Output = (String, String);
    const NAME: &'static str = "greetings";

    fn inputs(&self) -> Inputs<RequestEvent> {
        Inputs::new().topic(collab::request_topic(), |e| e)
    }

    fn tables(&self) -> Tables {
        Tables::new().with(Customers)
    }

    fn join(
        &self,
        input: &Envelope<RequestEvent>,
        rows: &Rows<'_>,
    ) -> Result<Option<(String, String)>, Missing> {
        let RequestEvent::Opened { customer, .. } = &input.event else {
            return Ok(None);
        };
        let name = rows.get::<Customers>(customer)?;
        Ok(Some((input.id().to_owned(), format!("hello {name}"))))
    }

    fn missing(
        &self,
        input: &Envelope<RequestEvent>,
        missing: &Missing,
    ) -> Result<Option<(String, String)>, BoxError> {
        Ok(Some((
            input.id().to_owned(),
            format!("no customer {}", missing.key),
        )))
    }

    async fn emit(
        &self,
        (id, text): (String, String),
        options: CommandOptions,
    ) -> Result<(), BoxError> {
        collab::record(&self.outbox, &id, text, options).await
    }
}

fn greetings(
    log: &Arc<dyn EventStore>,
    max_wait: Duration,
) -> JoinView<Greetings, MemoryViews<Keyed>> {
    JoinView::new(
        Greetings {
            outbox: Repository::new(Arc::clone(log)),
        },
        Arc::clone(log),
    )
    .max_wait(max_wait)
}

fn request(customer: &str) -> RequestEvent {
    RequestEvent::Opened {
        customer: customer.into(),
        amount: 1,
        at: 0,
        wait_ms: 0,
    }
}

fn named(name: &str) -> CustomerEvent {
    CustomerEvent::Named { name: name.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_keeps_the_latest_row_per_key_and_a_rebuild_gives_the_same() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log: Arc<dyn EventStore> =
        Arc::new(keel::store::sqlite::SqliteStore::open(dir.path().join("log.db")).await?);
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    for (id, event) in [
        ("c1", named("Ann")),
        ("c2", named("Bo")),
        ("c1", named("Annie")),
        ("c3", named("Cy")),
        ("c3", CustomerEvent::Left),
    ] {
        collab::append(log.as_ref(), "customer", id, &event).await?;
    }
    let runner = Runner::new(
        TableView::new(Customers),
        Arc::clone(&log),
        Arc::clone(&views),
    );
    runner.catch_up().await?;
    type View = TableView<Customers, SqliteViews>;
    assert_eq!(
        View::get(&views, "c1").await?,
        Some("Annie".into()),
        "the latest value"
    );
    assert_eq!(View::get(&views, "c3").await?, None, "deleted");
    let rows = View::rows(&views, "", 100).await?;
    assert_eq!(
        rows,
        vec![("c1".into(), "Annie".into()), ("c2".into(), "Bo".into())]
    );
    runner.rebuild(false, CancellationToken::new()).await?;
    assert_eq!(
        View::rows(&views, "", 100).await?,
        rows,
        "rebuilt by replay, the same"
    );
    Ok(())
}

#[tokio::test]
async fn an_event_waits_for_a_row_that_arrives_later_and_is_joined_once() -> anyhow::Result<()> {
    let log = collab::memory_log();
    let views = Arc::new(MemoryViews::<Keyed>::new());
    collab::append(log.as_ref(), "customer", "c1", &named("Ann")).await?;
    collab::append(log.as_ref(), "request", "r1", &request("c1")).await?;
    collab::append(log.as_ref(), "request", "r2", &request("c9")).await?;
    let runner = Runner::new(
        greetings(&log, Duration::from_secs(3600)),
        Arc::clone(&log),
        Arc::clone(&views),
    );
    runner.catch_up().await?;
    type View = JoinView<Greetings, MemoryViews<Keyed>>;
    let stats = View::stats(&views).await?;
    assert_eq!((stats.waiting, stats.joined), (1, 1), "r2 waits for c9");
    assert_eq!(outbox(log.as_ref()).await?.len(), 1);

    // The row arrives (twice: a duplicate delivery of the same fact must not join again).
    collab::append(log.as_ref(), "customer", "c9", &named("Nine")).await?;
    collab::append(log.as_ref(), "customer", "c9", &named("Nine")).await?;
    runner.catch_up().await?;
    let stats = View::stats(&views).await?;
    assert_eq!((stats.waiting, stats.joined, stats.expired), (0, 2, 0));
    let texts: Vec<String> = outbox(log.as_ref())
        .await?
        .into_iter()
        .map(|(_, _, t)| t)
        .collect();
    assert_eq!(texts, vec!["hello Ann".to_owned(), "hello Nine".to_owned()]);

    // A replay from offset 0, one record at a time: the same outputs, none twice.
    let replay = Runner::new(
        greetings(&log, Duration::from_secs(3600)),
        Arc::clone(&log),
        Arc::clone(&views),
    )
    .config(RunnerConfig {
        batch_size: 1,
        ..RunnerConfig::default()
    });
    replay.rebuild(true, CancellationToken::new()).await?;
    let again: Vec<String> = outbox(log.as_ref())
        .await?
        .into_iter()
        .map(|(_, _, t)| t)
        .collect();
    assert_eq!(again, texts);
    Ok(())
}

#[tokio::test]
async fn an_event_whose_row_never_comes_goes_to_missing_at_its_deadline() -> anyhow::Result<()> {
    let log = collab::memory_log();
    let views = Arc::new(MemoryViews::<Keyed>::new());
    let r = collab::append(log.as_ref(), "request", "r1", &request("c404")).await?;
    let runner = Runner::new(
        greetings(&log, Duration::from_millis(100)),
        Arc::clone(&log),
        Arc::clone(&views),
    );
    runner.catch_up().await?;
    assert!(
        outbox(log.as_ref()).await?.is_empty(),
        "waiting, not dropped"
    );
    let ticker = Ticker::new(Arc::clone(&log));
    ticker.tick_at(plus(r.timestamp, 99)).await?;
    runner.catch_up().await?;
    assert!(
        outbox(log.as_ref()).await?.is_empty(),
        "before its deadline it still waits"
    );
    ticker.tick_at(plus(r.timestamp, 100)).await?;
    runner.catch_up().await?;
    let texts: Vec<String> = outbox(log.as_ref())
        .await?
        .into_iter()
        .map(|(_, _, t)| t)
        .collect();
    assert_eq!(texts, vec!["no customer c404".to_owned()]);
    let stats = JoinView::<Greetings, MemoryViews<Keyed>>::stats(&views).await?;
    assert_eq!((stats.waiting, stats.expired), (0, 1));
    Ok(())
}

/// With a wait of 0 the deadline is the event's own stamp: a row stamped after it does not
/// release the event (whichever partition the runner reads first), the deadline does — the
/// same outcome live and in a replay.
#[tokio::test]
async fn a_row_stamped_after_the_deadline_does_not_release_the_event() -> anyhow::Result<()> {
    let log = collab::memory_log();
    let views = Arc::new(MemoryViews::<Keyed>::new());
    let r = collab::append(log.as_ref(), "request", "r1", &request("c7")).await?;
    let runner = Runner::new(
        greetings(&log, Duration::ZERO),
        Arc::clone(&log),
        Arc::clone(&views),
    );
    runner.catch_up().await?;
    let row = collab::append(log.as_ref(), "customer", "c7", &named("Seven")).await?;
    assert!(row.timestamp >= r.timestamp);
    runner.catch_up().await?;
    let stats = JoinView::<Greetings, MemoryViews<Keyed>>::stats(&views).await?;
    assert_eq!(
        (stats.waiting, stats.joined),
        (1, 0),
        "the late row did not release it"
    );
    Ticker::new(Arc::clone(&log)).tick_at(row.timestamp).await?;
    runner.catch_up().await?;
    let texts: Vec<String> = outbox(log.as_ref())
        .await?
        .into_iter()
        .map(|(_, _, t)| t)
        .collect();
    assert_eq!(texts, vec!["no customer c7".to_owned()]);
    Ok(())
}

#[tokio::test]
async fn more_waiting_events_than_the_bound_stop_the_runner_naming_the_event() -> anyhow::Result<()>
{
    let log = collab::memory_log();
    let views = Arc::new(MemoryViews::<Keyed>::new());
    for i in 0..3 {
        collab::append(
            log.as_ref(),
            "request",
            &format!("r{i}"),
            &request("nobody"),
        )
        .await?;
    }
    let runner = Runner::new(
        greetings(&log, Duration::from_secs(3600)).max_waiting(2),
        Arc::clone(&log),
        Arc::clone(&views),
    );
    let error = runner
        .catch_up()
        .await
        .expect_err("the third waiting event fails");
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    assert!(text.contains("already wait for rows"), "{text}");
    assert!(
        text.contains("topic request"),
        "the error names the event: {text}"
    );
    assert!(outbox(log.as_ref()).await?.is_empty());
    Ok(())
}
