//! A projection reads the event types it declares: records of other types in its topics are
//! passed over, counted, and the checkpoint still moves past them.

use std::sync::Arc;

use keel::store::memory::MemoryStore;
use keel::{
    AppendRequest, Event, EventStore, ExpectedVersion, NewEvent, Offset, Partition, StreamId, Topic,
};
use keel_projections::store::memory::{MemoryBatch, MemoryViews};
use keel_projections::{BoxError, Envelope, Projection, Runner};
use serde::{Deserialize, Serialize};

/// The one type this projection reads.
#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
enum Deposits {
    Deposited { amount: u64 },
}

struct Total;

impl Projection for Total {
    type Event = Deposits;
    type Store = MemoryViews<u64>;
    const NAME: &'static str = "total";

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::new("account").expect("topic")]
    }

    async fn apply(
        &self,
        view: &mut MemoryBatch<u64>,
        events: &[Envelope<Deposits>],
    ) -> Result<(), BoxError> {
        for e in events {
            let Deposits::Deposited { amount } = e.event;
            **view += amount;
        }
        Ok(())
    }
}

#[tokio::test]
async fn records_of_undeclared_types_are_passed_over_and_counted()
-> Result<(), Box<dyn std::error::Error>> {
    let log = Arc::new(MemoryStore::with_default_partitions(1));
    let stream = StreamId::new("account", "a")?;
    let events = vec![
        NewEvent::raw("Opened", 1, br#"{"owner":"A"}"#.to_vec()),
        NewEvent::raw("Deposited", 1, br#"{"amount":5}"#.to_vec()),
        NewEvent::raw("Withdrawn", 1, br#"{"amount":2}"#.to_vec()),
        NewEvent::raw("Deposited", 1, br#"{"amount":7}"#.to_vec()),
    ];
    log.append(AppendRequest::new(
        stream,
        ExpectedVersion::NoStream,
        events,
    ))
    .await?;
    let views = Arc::new(MemoryViews::default());
    let runner = Runner::new(Total, log.clone(), Arc::clone(&views));
    runner.catch_up().await?;
    assert_eq!(
        views.read("total", |t| *t).await,
        Some(12),
        "only the declared type was applied"
    );
    assert_eq!(
        runner.progress().borrow().skipped,
        2,
        "the two other records were counted"
    );
    let status = runner.status().await?;
    assert_eq!(
        status.lag, 0,
        "the checkpoint moved past the skipped records"
    );
    assert_eq!(
        status.partitions[0].checkpoint,
        log.head(&Topic::new("account")?, Partition(0)).await?.0
    );
    assert_eq!(Offset(status.partitions[0].checkpoint), Offset(4));
    Ok(())
}
