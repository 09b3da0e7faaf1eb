//! Windowed aggregation over event time: tumbling, hopping and sliding windows closing when
//! recorded time passes their end plus grace, late events counted and reported, and a replay
//! from offset 0 emitting the same results, once.

mod collab;

use std::sync::Arc;
use std::time::Duration;

use collab::{Outbox, RequestEvent, outbox};
use keel::store::EventStore;
use keel::{CommandOptions, Repository, Timestamp};
use keel_projections::keyed::Keyed;
use keel_projections::store::memory::MemoryViews;
use keel_projections::{
    BoxError, CancellationToken, Envelope, Inputs, Runner, RunnerConfig, Ticker, Window,
    WindowView, Windowed, Windows,
};

/// Sums the amounts of each customer's requests per window; event time is the `at` of the
/// payload (µs), so the tests choose it.
struct Spend {
    windows: Windows,
    outbox: Repository<Outbox, dyn EventStore>,
}

impl Windowed for Spend {
    type Input = RequestEvent;
    type Value = u64;
    type Aggregate = u64;
    type Output = (String, String);
    const NAME: &'static str = "spend";

    fn inputs(&self) -> Inputs<RequestEvent> {
        Inputs::new().topic(collab::request_topic(), |e| e)
    }

    fn windows(&self) -> Windows {
        self.windows
    }

    fn select(&self, input: &Envelope<RequestEvent>) -> Option<(String, u64)> {
        match &input.event {
            RequestEvent::Opened {
                customer, amount, ..
            } => Some((customer.clone(), *amount)),
            RequestEvent::Answered { .. } => None,
        }
    }

    fn time(&self, input: &Envelope<RequestEvent>) -> Timestamp {
        match &input.event {
            RequestEvent::Opened { at, .. } => Timestamp(*at),
            RequestEvent::Answered { .. } => input.record.timestamp,
        }
    }

    fn add(&self, sum: &mut u64, amount: &u64) {
        *sum += amount;
    }

    fn close(&self, w: &Window<u64, u64>) -> Option<(String, String)> {
        let ms = |t: Timestamp| t.0 / 1000;
        let text = match w.event {
            Some(amount) => format!(
                "{} ({}..{}] {} with {amount}",
                w.key,
                ms(w.start),
                ms(w.end),
                w.aggregate
            ),
            None => format!("{} [{}..{}) {}", w.key, ms(w.start), ms(w.end), w.aggregate),
        };
        Some((format!("{}-{}", w.key, ms(w.end)), text))
    }

    async fn emit(
        &self,
        (id, text): (String, String),
        options: CommandOptions,
    ) -> Result<(), BoxError> {
        collab::record(&self.outbox, &id, text, options).await
    }
}

fn spend(log: &Arc<dyn EventStore>, windows: Windows) -> WindowView<Spend, MemoryViews<Keyed>> {
    WindowView::new(Spend {
        windows,
        outbox: Repository::new(Arc::clone(log)),
    })
}

type View = WindowView<Spend, MemoryViews<Keyed>>;

/// Opens a request of `amount` for `customer` at event time `ms` milliseconds.
async fn at(
    log: &Arc<dyn EventStore>,
    id: &str,
    customer: &str,
    amount: u64,
    ms: i64,
) -> anyhow::Result<keel::RecordedEvent> {
    collab::append(
        log.as_ref(),
        "request",
        id,
        &RequestEvent::Opened {
            customer: customer.into(),
            amount,
            at: ms * 1000,
            wait_ms: 0,
        },
    )
    .await
}

async fn texts(log: &Arc<dyn EventStore>) -> anyhow::Result<Vec<String>> {
    Ok(outbox(log.as_ref())
        .await?
        .into_iter()
        .map(|(_, _, t)| t)
        .collect())
}

fn ms(ms: i64) -> Timestamp {
    Timestamp(ms * 1000)
}

#[tokio::test]
async fn tumbling_windows_close_when_recorded_time_passes_their_end() -> anyhow::Result<()> {
    let log = collab::memory_log();
    let views = Arc::new(MemoryViews::<Keyed>::new());
    let ticker = Ticker::new(Arc::clone(&log));
    at(&log, "r1", "ann", 1, 1000).await?;
    at(&log, "r2", "ann", 2, 1500).await?;
    at(&log, "r3", "bo", 4, 1999).await?;
    at(&log, "r4", "ann", 8, 2500).await?;
    let runner = Runner::new(
        spend(&log, Windows::tumbling(Duration::from_secs(1))),
        Arc::clone(&log),
        Arc::clone(&views),
    );
    runner.catch_up().await?;
    assert!(
        texts(&log).await?.is_empty(),
        "without ticks no window closes"
    );
    ticker.tick_at(ms(1999)).await?;
    runner.catch_up().await?;
    assert!(
        texts(&log).await?.is_empty(),
        "recorded time is still inside [1000, 2000)"
    );
    ticker.tick_at(ms(2000)).await?;
    runner.catch_up().await?;
    assert_eq!(
        texts(&log).await?,
        vec!["ann [1000..2000) 3", "bo [1000..2000) 4"]
    );
    ticker.tick_at(ms(3000)).await?;
    runner.catch_up().await?;
    assert_eq!(
        texts(&log).await?,
        vec![
            "ann [1000..2000) 3",
            "ann [2000..3000) 8",
            "bo [1000..2000) 4"
        ]
    );
    let stats = View::stats(&views).await?;
    assert_eq!((stats.closed, stats.late), (3, 0));
    Ok(())
}

#[tokio::test]
async fn hopping_windows_hold_each_event_in_size_over_advance_windows() -> anyhow::Result<()> {
    let log = collab::memory_log();
    let views = Arc::new(MemoryViews::<Keyed>::new());
    at(&log, "r1", "ann", 1, 1500).await?;
    at(&log, "r2", "ann", 2, 2500).await?;
    Ticker::new(Arc::clone(&log)).tick_at(ms(4000)).await?;
    let windows = Windows::hopping(Duration::from_secs(2), Duration::from_secs(1));
    Runner::new(spend(&log, windows), Arc::clone(&log), Arc::clone(&views))
        .catch_up()
        .await?;
    assert_eq!(
        texts(&log).await?,
        vec![
            "ann [0..2000) 1",
            "ann [1000..3000) 3",
            "ann [2000..4000) 2"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn sliding_windows_sum_the_size_before_each_event() -> anyhow::Result<()> {
    let log = collab::memory_log();
    let views = Arc::new(MemoryViews::<Keyed>::new());
    at(&log, "r1", "ann", 1, 1000).await?;
    at(&log, "r2", "ann", 2, 1500).await?;
    at(&log, "r3", "ann", 4, 2200).await?;
    at(&log, "r4", "bo", 16, 2200).await?;
    let ticker = Ticker::new(Arc::clone(&log));
    ticker.tick_at(ms(1500)).await?;
    let runner = Runner::new(
        spend(&log, Windows::sliding(Duration::from_secs(1))),
        Arc::clone(&log),
        Arc::clone(&views),
    );
    runner.catch_up().await?;
    assert_eq!(
        texts(&log).await?,
        vec!["ann (0..1000] 1 with 1", "ann (500..1500] 3 with 2"],
        "the windows of events up to recorded time closed, with the last second before each"
    );
    ticker.tick_at(ms(2200)).await?;
    runner.catch_up().await?;
    assert_eq!(
        texts(&log).await?,
        vec![
            "ann (0..1000] 1 with 1",
            "ann (500..1500] 3 with 2",
            "ann (1200..2200] 6 with 4",
            "bo (1200..2200] 16 with 16",
        ]
    );
    Ok(())
}

/// Grace of 500 ms on windows of a second: an event inside the grace still counts; one past
/// it is left out, counted and reported with its position; a replay from offset 0 (one record
/// at a time) emits the same results and nothing twice.
#[tokio::test]
async fn late_events_past_the_grace_are_counted_and_reported() -> anyhow::Result<()> {
    let log = collab::memory_log();
    let views = Arc::new(MemoryViews::<Keyed>::new());
    let ticker = Ticker::new(Arc::clone(&log));
    let windows = Windows::tumbling(Duration::from_secs(1)).grace(Duration::from_millis(500));
    let runner = Runner::new(spend(&log, windows), Arc::clone(&log), Arc::clone(&views));
    at(&log, "r1", "ann", 1, 1200).await?;
    ticker.tick_at(ms(2400)).await?;
    at(&log, "r2", "ann", 2, 1900).await?; // inside the grace: [1000, 2000) closes at 2500
    runner.catch_up().await?;
    ticker.tick_at(ms(2500)).await?;
    runner.catch_up().await?;
    assert_eq!(texts(&log).await?, vec!["ann [1000..2000) 3"]);
    let late = at(&log, "r3", "ann", 4, 1800).await?; // its window has closed
    at(&log, "r4", "ann", 8, 2100).await?;
    ticker.tick_at(ms(3500)).await?;
    runner.catch_up().await?;
    assert_eq!(
        texts(&log).await?,
        vec!["ann [1000..2000) 3", "ann [2000..3000) 8"],
        "the late event is left out"
    );
    let stats = View::stats(&views).await?;
    assert_eq!((stats.closed, stats.late), (2, 1));
    let reported = stats.last_late.clone().expect("the late event is reported");
    assert_eq!(reported.position, late.position);
    assert_eq!(reported.time, ms(1800));
    assert_eq!(reported.watermark, ms(2500));

    let before = outbox(log.as_ref()).await?;
    let replay = Runner::new(spend(&log, windows), Arc::clone(&log), Arc::clone(&views)).config(
        RunnerConfig {
            batch_size: 1,
            ..RunnerConfig::default()
        },
    );
    replay.rebuild(true, CancellationToken::new()).await?;
    assert_eq!(
        outbox(log.as_ref()).await?,
        before,
        "the same results, none twice"
    );
    assert_eq!(View::stats(&views).await?, stats);
    Ok(())
}
