//! A child process for the process-manager crash test: runs a process manager that answers
//! every request of a SQLite log with one outbox record, one command at a time and slowly, so
//! that the test's SIGKILL lands between sending a batch's commands and committing the batch.
//!
//! Usage: `process_worker LOG_DB VIEWS_DB`. Prints `SENT <request>` after each command
//! returned, until it is killed.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use keel::prelude::*;
use keel::store::sqlite::SqliteStore;
use keel::{CommandOptions, EventStore, Repository, Topic};
use keel_projections::store::sqlite::SqliteViews;
use keel_projections::{
    BoxError, CancellationToken, Effects, Envelope, Inputs, Process, ProcessManager, Runner,
};
use serde::{Deserialize, Serialize};

/// The requests (the test writes them; only `Opened` matters here).
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
enum RequestEvent {
    Opened { customer: String },
    Answered { by: String },
}

/// The outbox: every command appends.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
enum OutboxEvent {
    Recorded { text: String },
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Aggregate, Default, Debug)]
#[aggregate(kind = "outbox", event = OutboxEvent, error = Never)]
struct Outbox;

impl Apply<OutboxEvent> for Outbox {
    fn apply(&mut self, _: &OutboxEvent) {}
}

#[keel::commands]
impl Outbox {
    #[expect(
        unreachable_pub,
        reason = "`#[keel::commands]` makes the `pub` methods commands"
    )]
    pub fn record(&self, text: String) -> OutboxEvent {
        OutboxEvent::Recorded { text }
    }
}

struct Echo {
    outbox: Repository<Outbox, dyn EventStore>,
}

impl ProcessManager for Echo {
    type Input = RequestEvent;
    type State = ();
    type Command = (String, OutboxCommand);
    const NAME: &'static str = "echo";

    fn inputs(&self) -> Inputs<RequestEvent> {
        Inputs::new().topic(Topic::new("request").expect("a topic"), |e| e)
    }

    fn key(&self, input: &Envelope<RequestEvent>) -> Option<String> {
        Some(input.id().to_owned())
    }

    fn react(&self, _: &mut (), input: &Envelope<RequestEvent>, out: &mut Effects<Self::Command>) {
        if let RequestEvent::Opened { customer } = &input.event {
            let id = input.id().to_owned();
            let text = format!("echo {id} for {customer}");
            out.send(id.clone(), (id, OutboxCommand::Record { text }));
        }
    }

    async fn send(
        &self,
        (id, command): Self::Command,
        options: CommandOptions,
    ) -> Result<(), BoxError> {
        self.outbox.execute_with(&id, command, options).await?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "SENT {id}")?;
            out.flush()?;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
        Ok(())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(log_db), Some(views_db)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: process_worker LOG_DB VIEWS_DB");
    };
    let log: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&log_db).await?);
    let views = Arc::new(SqliteViews::open(&views_db).await?);
    let echo = Echo {
        outbox: Repository::new(Arc::clone(&log)),
    };
    let runner = Runner::new(Process::new(echo).concurrency(1), log, views);
    runner.run(CancellationToken::new()).await?;
    Ok(())
}
