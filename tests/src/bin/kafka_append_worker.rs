//! A child process for the Kafka takeover and broker-failure tests: appends from several
//! tasks through a [`KafkaStore`] and prints one `ACK` line per acknowledged append, until it
//! is killed (or, with a count, until it has that many).
//!
//! Usage: `kafka_append_worker BOOTSTRAP PREFIX ROUND [REPLICATION]`. Each append writes 3
//! events to stream `s<n>` of topic `crash` under the command id `r{round}-t{task}-{i}`; the
//! line is `ACK <stream id> <command id> <partition> <first version> <offset> <offset> <offset>`.
//! A failed append is retried with the same command id (so it is written once) and is
//! acknowledged only once it succeeds.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use keel::store::kafka::KafkaStore;
use keel::{
    AppendRequest, CommandId, CommandMeta, EventStore, ExpectedVersion, Fingerprint, NewEvent,
    StreamId,
};

const TASKS: u64 = 4;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage =
        || anyhow::anyhow!("usage: kafka_append_worker BOOTSTRAP PREFIX ROUND [REPLICATION]");
    let bootstrap = args.next().ok_or_else(usage)?;
    let prefix = args.next().ok_or_else(usage)?;
    let round: u64 = args.next().ok_or_else(usage)?.parse()?;
    let replication: u16 = args.next().map_or(Ok(1), |r| r.parse())?;
    let store = Arc::new(
        KafkaStore::builder(bootstrap)
            .topic_prefix(&prefix)
            .group(prefix.trim_end_matches('.'))
            .default_partitions(2)
            .replication_factor(replication)
            .writer_snapshot_every(7)
            .timeout(Duration::from_secs(20))
            .open()
            .await?,
    );
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (store, stdout) = (Arc::clone(&store), Arc::clone(&stdout));
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let stream = StreamId::new("crash", format!("s{}", (task * 7 + i) % 5))?;
                let id = format!("r{round}-t{task}-{i}");
                let a = loop {
                    let events = (0..3)
                        .map(|k| NewEvent::raw("Tested", 1, format!(r#"{{"n":{k}}}"#).into_bytes()))
                        .collect();
                    let request = AppendRequest::new(stream.clone(), ExpectedVersion::Any, events)
                        .with_command(CommandMeta::new(
                            CommandId::new(&id)?,
                            Fingerprint::of_bytes(id.as_bytes()),
                        ));
                    match store.append(request).await {
                        Ok(a) => break a,
                        Err(e) => {
                            eprintln!("append {id} failed, retrying: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
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
