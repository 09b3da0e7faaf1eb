//! Reading partitions with `read_committed` consumers (assigned, never subscribed: no group
//! membership, no offset commits).
//!
//! A reader stops at the partition's end: librdkafka reports end-of-partition at the last
//! stable offset for `read_committed` consumers, so records of an open or aborted transaction
//! are never returned and never waited for. Consumers block, so they run on blocking threads.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Message, TopicPartitionList};
use tokio::sync::mpsc;

use crate::ids::{Offset, Partition};
use crate::store::{Error, Result};

/// A page of records, and where the partition ended when it was the last one.
pub(crate) struct Page {
    pub(crate) messages: Vec<OwnedMessage>,
    /// Set on the last page: the offset after the partition's end (its last stable offset).
    pub(crate) end: Option<Offset>,
}

/// Makes consumers and keeps a few for reuse.
pub(crate) struct Reader {
    config: ClientConfig,
    idle: Arc<Mutex<Vec<BaseConsumer>>>,
    timeout: Duration,
}

fn failed(topic: &str, partition: Partition) -> impl Fn(KafkaError) -> Error + '_ {
    move |e| {
        Error::backend(
            "read a partition",
            format!("topic {topic} partition {partition}: {e}"),
        )
    }
}

impl Reader {
    pub(crate) fn new(base: &ClientConfig, group: &str, timeout: Duration) -> Self {
        let mut config = base.clone();
        config
            .set("group.id", format!("{group}.keel-reader"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            // Past the end (a resume point after the last marker) reads nothing.
            .set("auto.offset.reset", "latest")
            .set("fetch.wait.max.ms", "20");
        Self {
            config,
            idle: Arc::new(Mutex::new(Vec::new())),
            timeout,
        }
    }

    fn consumer(config: &ClientConfig, idle: &Mutex<Vec<BaseConsumer>>) -> Result<BaseConsumer> {
        let pooled = idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match pooled {
            Some(c) => Ok(c),
            None => config
                .create()
                .map_err(|e| Error::backend("create a Kafka consumer", e)),
        }
    }

    /// Reads up to `limit` committed records from `from`, stopping at the partition's end;
    /// keeps reading past an end below `reach` (records this store committed whose markers
    /// are still on their way) until `timeout`.
    pub(crate) async fn read(
        &self,
        topic: &str,
        partition: Partition,
        from: Offset,
        limit: usize,
        reach: Offset,
    ) -> Result<Vec<OwnedMessage>> {
        let (config, idle, timeout) = (self.config.clone(), Arc::clone(&self.idle), self.timeout);
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer = Self::consumer(&config, &idle)?;
            let result = read_blocking(&consumer, &topic, partition, from, limit, reach, timeout);
            let _ = consumer.unassign();
            if result.is_ok() {
                let mut idle = idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if idle.len() < 4 {
                    idle.push(consumer);
                }
            }
            result.map(|(messages, _)| messages)
        })
        .await
        .map_err(|e| Error::backend("read a partition", e))?
    }

    /// Reads a partition from `from` to its end in pages of about `page` records, sent to
    /// the returned channel; the last page carries the end offset. An error ends the pages.
    pub(crate) fn pages(
        &self,
        topic: &str,
        partition: Partition,
        from: Offset,
        page: usize,
    ) -> mpsc::Receiver<Result<Page>> {
        let (tx, rx) = mpsc::channel(2);
        let (config, timeout) = (self.config.clone(), self.timeout);
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = match config.create() {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Error::backend("create a Kafka consumer", e)));
                    return;
                }
            };
            let mut next = from;
            loop {
                match read_blocking(&consumer, &topic, partition, next, page, Offset(0), timeout) {
                    Ok((messages, end)) => {
                        if let Some(last) = messages.last() {
                            next = Offset(u64::try_from(last.offset()).unwrap_or(0) + 1);
                        }
                        let end = end.map(|e| e.max(next));
                        let done = end.is_some();
                        if tx.blocking_send(Ok(Page { messages, end })).is_err() || done {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        rx
    }

    /// The partition's end for `read_committed` readers (its last stable offset).
    pub(crate) async fn end(&self, topic: &str, partition: Partition) -> Result<Offset> {
        let (config, idle, timeout) = (self.config.clone(), Arc::clone(&self.idle), self.timeout);
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer = Self::consumer(&config, &idle)?;
            let (_, high) = consumer
                .fetch_watermarks(
                    &topic,
                    i32::try_from(partition.0).unwrap_or(i32::MAX),
                    timeout,
                )
                .map_err(failed(&topic, partition))?;
            idle.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(consumer);
            Ok(Offset(u64::try_from(high).unwrap_or(0)))
        })
        .await
        .map_err(|e| Error::backend("read a partition's end", e))?
    }
}

/// Reads from `from` until `limit` records, or the partition's end at or past `reach`.
/// Returns the records and, when the end was reached, the offset after it.
fn read_blocking(
    consumer: &BaseConsumer,
    topic: &str,
    partition: Partition,
    from: Offset,
    limit: usize,
    reach: Offset,
    timeout: Duration,
) -> Result<(Vec<OwnedMessage>, Option<Offset>)> {
    let p = i32::try_from(partition.0).unwrap_or(i32::MAX);
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(
            topic,
            p,
            rdkafka::Offset::Offset(i64::try_from(from.0).unwrap_or(i64::MAX)),
        )
        .map_err(failed(topic, partition))?;
    consumer
        .assign(&assignment)
        .map_err(failed(topic, partition))?;
    let deadline = Instant::now() + timeout;
    let mut messages = Vec::new();
    let mut next = from;
    let mut last_error = None;
    while messages.len() < limit {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if m.topic() != topic || m.partition() != p {
                    continue;
                }
                next = Offset(u64::try_from(m.offset()).unwrap_or(0) + 1);
                messages.push(m.detach());
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                let end = position(consumer, topic, p).unwrap_or(next).max(next);
                if end >= reach {
                    return Ok((messages, Some(end)));
                }
            }
            // Consumer errors are reports (a broker connection dropped, a leader moved):
            // librdkafka retries by itself. Keep reading until the deadline.
            Some(Err(e)) => {
                tracing::debug!(topic, %partition, error = %e, "consumer error; still reading");
                last_error = Some(e);
            }
            None => {}
        }
        if Instant::now() > deadline {
            if !messages.is_empty() {
                return Ok((messages, None));
            }
            let why = last_error.map_or_else(String::new, |e| format!("; last error: {e}"));
            return Err(Error::backend(
                "read a partition",
                format!(
                    "topic {topic} partition {partition}: no end of partition within {timeout:?} (read from offset {from} to {next}){why}"
                ),
            ));
        }
    }
    Ok((messages, None))
}

fn position(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<Offset> {
    let positions = consumer.position().ok()?;
    let offset = positions.find_partition(topic, partition)?.offset();
    match offset {
        rdkafka::Offset::Offset(o) => u64::try_from(o).ok().map(Offset),
        _ => None,
    }
}
