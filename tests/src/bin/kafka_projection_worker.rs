//! A child process for the shared-projection test: runs the bank's balances projection as
//! one instance of several over a Kafka log (a consumer group splits the partitions), with its
//! view in a SQLite file the instances share, until its standard input ends. Each batch waits
//! `SLOW_MS` inside its transaction before it writes, so the test can kill the process in the
//! middle of one.
//!
//! Usage: `kafka_projection_worker BOOTSTRAP PREFIX VIEWS_DB SLOW_MS NAME`. Lines printed:
//! `ASSIGNED <partitions>` and `REVOKED <partitions>` as the group moves partitions,
//! `APPLYING <partition> <first offset> <events>` when a batch starts (its transaction is
//! open), `COMMITTED <events applied by this process>` after commits, `STOPPED` at the end.
//! Logs go to standard error, filtered by `RUST_LOG`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bank::AccountEvent;
use bank::projections::Balances;
use keel::EventStore;
use keel::kafka::PartitionGroup;
use keel::store::kafka::KafkaStore;
use keel_projections::store::sqlite::{SqliteBatch, SqliteViews};
use keel_projections::{
    AssignmentChange, Assignments, BoxError, CancellationToken, Envelope, Projection, Runner,
    RunnerConfig,
};
use tokio::io::AsyncBufReadExt as _;

/// The balances projection, slowed down inside each batch.
struct SlowBalances {
    slow: Duration,
}

impl Projection for SlowBalances {
    type Event = AccountEvent;
    type Store = SqliteViews;
    const NAME: &'static str = Balances::NAME;

    fn topics(&self) -> Vec<keel::Topic> {
        Balances.topics()
    }

    async fn setup(&self, view: &mut SqliteBatch) -> Result<(), BoxError> {
        Balances.setup(view).await
    }

    async fn apply(
        &self,
        view: &mut SqliteBatch,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        if let Some(first) = events.first() {
            say(&format!(
                "APPLYING {} {} {}",
                first.partition(),
                first.offset(),
                events.len()
            ));
        }
        tokio::time::sleep(self.slow).await;
        Balances.apply(view, events).await
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The group's changes, printed as they pass.
struct Printed(PartitionGroup);

#[keel_projections::async_trait]
impl Assignments for Printed {
    async fn next(&mut self) -> Option<AssignmentChange> {
        let change = Assignments::next(&mut self.0).await?;
        let list = |ps: &[(keel::Topic, keel::Partition)]| {
            ps.iter()
                .map(|(_, p)| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        match &change {
            AssignmentChange::Assigned(ps) => say(&format!("ASSIGNED {}", list(ps))),
            AssignmentChange::Revoked(r) => say(&format!("REVOKED {}", list(&r.partitions))),
            _ => {}
        }
        Some(change)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let (Some(bootstrap), Some(prefix), Some(views_db), Some(slow), Some(name)) = (
        args.next(),
        args.next(),
        args.next(),
        args.next(),
        args.next(),
    ) else {
        anyhow::bail!("usage: kafka_projection_worker BOOTSTRAP PREFIX VIEWS_DB SLOW_MS NAME");
    };
    let store = Arc::new(
        KafkaStore::builder(&bootstrap)
            .topic_prefix(&prefix)
            .group(format!("{prefix}{name}"))
            .replication_factor(1)
            .own_partitions([])
            // Beside the views, not in a temporary directory a SIGKILL would leave behind.
            .state_dir(format!("{views_db}.{name}.kafka-state"))
            .open()
            .await?,
    );
    let log: Arc<dyn EventStore> = store.clone();
    let views = Arc::new(SqliteViews::open(&views_db).await?);
    let config = RunnerConfig {
        batch_size: 25,
        owner: name.clone(),
        ..RunnerConfig::default()
    };
    let runner = Runner::new(
        SlowBalances {
            slow: Duration::from_millis(slow.parse()?),
        },
        log,
        Arc::clone(&views),
    )
    .config(config);
    let group = PartitionGroup::builder(&store, "balances", Balances.topics())
        .instance(name)
        .session_timeout(Duration::from_secs(6))
        .join()
        .await?;
    let cancel = CancellationToken::new();
    let mut progress = runner.progress();
    let printer = tokio::spawn(async move {
        while progress.changed().await.is_ok() {
            let applied = progress.borrow_and_update().applied;
            if applied > 0 {
                say(&format!("COMMITTED {applied}"));
            }
        }
    });
    let stdin_closed = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
            cancel.cancel();
        })
    };
    let result = runner.run_shared(Printed(group), cancel).await;
    printer.abort();
    stdin_closed.abort();
    views.close().await;
    store.close().await;
    say("STOPPED");
    result?;
    Ok(())
}
