//! Answers on their way back: each instance reads its own partition of the group's replies
//! topic (`read_committed`: an answer exists only if its transaction committed) from where it
//! ended when the instance started, and hands each answer addressed to it to the caller
//! waiting for it (by the id of the send, so two sends of one command id each get their own
//! answer).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, TopicPartitionList};
use tokio::sync::oneshot;

use crate::store::{Error, Result};

use super::protocol;

type Waiters = Mutex<HashMap<String, Vec<oneshot::Sender<Vec<u8>>>>>;

/// The callers of this instance waiting for answers.
pub(crate) struct Replies {
    waiters: Arc<Waiters>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Replies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replies").finish_non_exhaustive()
    }
}

/// A caller's place in line for an answer; dropping it stops waiting.
pub(crate) struct Waiting {
    waiters: Arc<Waiters>,
    request: String,
    rx: oneshot::Receiver<Vec<u8>>,
}

impl Waiting {
    /// The answer's value, once it comes.
    pub(crate) async fn answer(&mut self) -> Option<Vec<u8>> {
        (&mut self.rx).await.ok()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waiters = self
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(list) = waiters.get_mut(&self.request) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                waiters.remove(&self.request);
            }
        }
    }
}

impl Replies {
    /// Starts reading `partition` of `topic` from its current end, for `instance`.
    pub(crate) fn start(
        base: &ClientConfig,
        topic: &str,
        partition: i32,
        instance: &str,
        timeout: Duration,
    ) -> Result<Self> {
        let mut config = base.clone();
        config
            .set("group.id", format!("{instance}.keel-replies"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.error.backoff.ms", "20");
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| Error::backend("create a Kafka consumer", e))?;
        // From the end as it is now: an answer to a command sent after this cannot be
        // missed (an end resolved later could be past it). A topic just created may not
        // have a leader yet: ask again until the timeout.
        let deadline = std::time::Instant::now() + timeout;
        let high = loop {
            match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
                Ok((_, high)) => break high,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::debug!(topic, partition, error = %e, "the replies topic is not ready yet");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(Error::backend(
                        "read the replies topic",
                        format!("topic {topic} partition {partition}: {e}"),
                    ));
                }
            }
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(high))
            .map_err(|e| Error::backend("read the replies topic", e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| Error::backend("read the replies topic", e))?;
        let waiters: Arc<Waiters> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (waiters, stop, instance) =
                (Arc::clone(&waiters), Arc::clone(&stop), instance.to_owned());
            std::thread::Builder::new()
                .name("keel-replies".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        match consumer.poll(Duration::from_millis(100)) {
                            Some(Ok(m)) => {
                                let m = m.detach();
                                let Some((request, to)) = protocol::reply_address(&m) else {
                                    continue;
                                };
                                if to != instance {
                                    continue;
                                }
                                let waiting = waiters
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .remove(&request);
                                for tx in waiting.into_iter().flatten() {
                                    let _ = tx.send(m.payload().unwrap_or_default().to_vec());
                                }
                            }
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "replies consumer: error report");
                            }
                            None => {}
                        }
                    }
                })
                .map_err(|e| Error::backend("start the replies thread", e))?
        };
        Ok(Self {
            waiters,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Waits for the answer to the send `request` (call before sending the command).
    pub(crate) fn wait_for(&self, request: &str) -> Waiting {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(request.to_owned())
            .or_default()
            .push(tx);
        Waiting {
            waiters: Arc::clone(&self.waiters),
            request: request.to_owned(),
            rx,
        }
    }

    /// Stops reading (blocks until the thread ends: call it off the runtime).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}
