//! A child process for crash tests: appends to an event store from several tasks and prints one
//! `ACK` line per acknowledged append, until it is killed.
//!
//! Usage: `append_worker DB_PATH ROUND` (a SQLite file) or
//! `append_worker postgres://… ROUND SCHEMA` (a PostgreSQL store in that schema). Each append
//! writes 3 events under the command id `r{round}-t{task}-{i}`; the line is
//! `ACK <stream id> <command id> <partition> <first version> <offset> <offset> <offset>`.

use std::io::Write;
use std::sync::Arc;

use keel::store::postgres::PostgresStore;
use keel::store::sqlite::SqliteStore;
use keel::{
    AppendRequest, CommandId, CommandMeta, EventStore, ExpectedVersion, Fingerprint, NewEvent,
    StreamId,
};

const TASKS: u64 = 4;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || anyhow::anyhow!("usage: append_worker DB_PATH|POSTGRES_URL ROUND [SCHEMA]");
    let target = args.next().ok_or_else(usage)?;
    let round: u64 = args.next().ok_or_else(usage)?.parse()?;
    let store: Arc<dyn EventStore> = if target.starts_with("postgres://") {
        let schema = args.next().ok_or_else(usage)?;
        Arc::new(
            PostgresStore::builder(&target)
                .schema(schema)
                .default_partitions(2)
                .open()
                .await?,
        )
    } else {
        Arc::new(
            SqliteStore::builder(&target)
                .default_partitions(2)
                .open()
                .await?,
        )
    };
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (store, stdout) = (Arc::clone(&store), Arc::clone(&stdout));
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let stream = StreamId::new("crash", format!("s{}", (task * 7 + i) % 5))?;
                let id = format!("r{round}-t{task}-{i}");
                let events = (0..3)
                    .map(|k| NewEvent::raw("Tested", 1, format!(r#"{{"n":{k}}}"#).into_bytes()))
                    .collect();
                let request = AppendRequest::new(stream.clone(), ExpectedVersion::Any, events)
                    .with_command(CommandMeta::new(
                        CommandId::new(&id)?,
                        Fingerprint::of_bytes(id.as_bytes()),
                    ));
                let a = store.append(request).await?;
                let offsets: Vec<String> = a.offsets.iter().map(ToString::to_string).collect();
                let line = format!(
                    "ACK {} {id} {} {} {}\n",
                    stream.id(),
                    a.partition,
                    a.first_version,
                    offsets.join(" ")
                );
                let mut out = stdout.lock().map_err(|_| anyhow::anyhow!("stdout lock"))?;
                out.write_all(line.as_bytes())?;
                out.flush()?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
