//! Read-your-writes: a command returns the positions of its events; a query waits, with a
//! timeout, until a view has applied them — through the view store, so from another handle
//! (another process) too.

mod collab;

use std::sync::Arc;
use std::time::{Duration, Instant};

use collab::{CustomerEvent, Outbox, OutboxCommand};
use keel::store::EventStore;
use keel::{Position, Repository};
use keel_projections::store::sqlite::SqliteViews;
use keel_projections::{
    CancellationToken, Envelope, Error, Inputs, Runner, Table, TableView, wait_for,
};

/// The last text recorded per outbox.
struct LastText;

impl Table for LastText {
    type Input = collab::OutboxEvent;
    type Row = String;
    const NAME: &'static str = "last_text";

    fn inputs(&self) -> Inputs<collab::OutboxEvent> {
        Inputs::new().aggregate::<Outbox>(|e| e)
    }

    fn key(&self, input: &Envelope<collab::OutboxEvent>) -> Option<String> {
        Some(input.id().to_owned())
    }

    fn update(&self, _: Option<String>, input: &Envelope<collab::OutboxEvent>) -> Option<String> {
        let collab::OutboxEvent::Recorded { text } = &input.event;
        Some(text.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_waits_until_the_view_has_applied_a_commands_positions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log: Arc<dyn EventStore> =
        Arc::new(keel::store::sqlite::SqliteStore::open(dir.path().join("log.db")).await?);
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    // Another handle on the views file: the reader of another process.
    let reader = SqliteViews::open(dir.path().join("views.db")).await?;
    let outbox = Repository::<Outbox, _>::new(Arc::clone(&log));
    // Something unrelated in the log first, so the view exists.
    collab::append(log.as_ref(), "customer", "c1", &CustomerEvent::Left).await?;

    let done = outbox
        .execute(
            "o1",
            OutboxCommand::Record {
                text: "first".into(),
            },
        )
        .await?;
    let positions: Vec<Position> = done.positions().cloned().collect();
    assert_eq!(positions.len(), 1);

    // No runner yet: the wait runs out and names the position not applied.
    let started = Instant::now();
    let waited = wait_for(&reader, "last_text", &positions, Duration::from_millis(150)).await;
    let Err(Error::NotYet { position, .. }) = waited else {
        panic!("expected the wait to run out, got {waited:?}");
    };
    assert_eq!(position, positions[0]);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let runner = Arc::new(Runner::new(
        TableView::new(LastText),
        Arc::clone(&log),
        Arc::clone(&views),
    ));
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (runner, stop) = (Arc::clone(&runner), stop.clone());
        async move { runner.run(stop).await }
    });
    wait_for(&reader, "last_text", &positions, Duration::from_secs(30)).await?;
    assert_eq!(
        TableView::<LastText, SqliteViews>::get(&reader, "o1").await?,
        Some("first".into()),
        "after the wait, the read sees the command's effect"
    );

    // Each later command: its effect is visible as soon as the wait returns.
    for i in 0..20 {
        let text = format!("text {i}");
        let done = outbox
            .execute("o1", OutboxCommand::Record { text: text.clone() })
            .await?;
        let positions: Vec<Position> = done.positions().cloned().collect();
        runner.wait_for(&positions, Duration::from_secs(30)).await?;
        assert_eq!(
            TableView::<LastText, SqliteViews>::get(&reader, "o1").await?,
            Some(text)
        );
    }
    stop.cancel();
    running.await??;
    Ok(())
}
