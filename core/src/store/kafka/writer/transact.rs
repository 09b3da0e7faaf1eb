//! One Kafka transaction: begin, send every record of the batch, wait for their
//! acknowledgements, answer routed commands on the replies topic, commit the commands'
//! consumer offsets, commit — or abort, and say how it failed.

use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::ids::Offset;
use crate::kafka::protocol;
use crate::store::Appended;
use crate::store::ledger::Decision;

use super::super::commands::ReplyTo;
use super::super::record;
use super::super::snapshot::WriterSnapshot;
use super::plan::Plan;
use super::{Batch, Writer};

/// How a transaction failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// Another writer took the partition.
    Fenced(String),
    /// Nothing was written.
    Aborted(String),
    /// The outcome is unknown: the partition must be re-taken before the next batch.
    Unknown(String),
}

pub(super) fn classify(e: &KafkaError) -> Failure {
    let code = e.rdkafka_error_code();
    if matches!(
        code,
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    ) {
        return Failure::Fenced(e.to_string());
    }
    if let KafkaError::Transaction(rde) = e {
        if rde.is_fatal() {
            return Failure::Unknown(e.to_string());
        }
        if rde.txn_requires_abort() {
            return Failure::Aborted(e.to_string());
        }
    }
    Failure::Unknown(e.to_string())
}

fn is_retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(rde) if rde.is_retriable() && !rde.is_fatal() && !rde.txn_requires_abort())
}

/// What a committed transaction wrote.
pub(super) struct Written {
    /// The offsets of each written append's events, in the order of `Plan::writes`.
    pub(super) offsets: Vec<Vec<Offset>>,
    /// The commands-partition offsets answered in it, and the watermark committed.
    pub(super) answered: Vec<i64>,
    pub(super) watermark: Option<i64>,
}

impl Writer {
    /// Writes a batch in one transaction.
    pub(super) async fn transact(
        &mut self,
        batch: &Batch,
        plan: &Plan,
        writes: &[usize],
        writer_snapshot: Option<&WriterSnapshot>,
    ) -> Result<Written, Failure> {
        let written = self.send(batch, plan, writes, writer_snapshot).await?;
        if self.ctx.transactional {
            self.commit().await?;
        }
        Ok(written)
    }

    /// Begins a transaction and writes the batch in it, every record acknowledged, but
    /// does not commit: [`Writer::commit`] does. On failure the transaction is aborted.
    pub(super) async fn send(
        &mut self,
        batch: &Batch,
        plan: &Plan,
        writes: &[usize],
        writer_snapshot: Option<&WriterSnapshot>,
    ) -> Result<Written, Failure> {
        let transactional = self.ctx.transactional;
        if transactional {
            self.producer
                .begin_transaction()
                .map_err(|e| classify(&e))?;
        }
        let written = self
            .transact_inner(batch, plan, writes, writer_snapshot)
            .await;
        match written {
            Err(Failure::Aborted(d) | Failure::Unknown(d)) if transactional => {
                Err(self.abort(d).await)
            }
            written => written,
        }
    }

    /// Everything between begin and commit.
    async fn transact_inner(
        &mut self,
        batch: &Batch,
        plan: &Plan,
        writes: &[usize],
        writer_snapshot: Option<&WriterSnapshot>,
    ) -> Result<Written, Failure> {
        let (deliveries, others) = self
            .send_all(batch, plan, writes, writer_snapshot)
            .map_err(|e| classify(&e))?;
        // Every record is acknowledged before the commit: rdkafka's `commit_transaction`
        // flushes first, and its flush sleeps up to 100 ms in a poll when records are still
        // in flight (the delivery reports go to the producer's own polling thread), which
        // made every transaction last 100 ms. Waiting here costs nothing: the commit waits
        // for the same acknowledgements.
        let offsets = delivered(deliveries, others).await?;
        let answered = self.send_answers(batch, plan, writes, &offsets).await?;
        let watermark = self.send_offsets(&answered).await?;
        Ok(Written {
            offsets,
            answered,
            watermark,
        })
    }

    /// Enqueues every record of the batch; returns the delivery futures of each write's
    /// events, and of the other records (snapshots).
    fn send_all(
        &self,
        batch: &Batch,
        plan: &Plan,
        writes: &[usize],
        writer_snapshot: Option<&WriterSnapshot>,
    ) -> Result<(Vec<Vec<DeliveryFuture>>, Vec<DeliveryFuture>), KafkaError> {
        let p = i32::try_from(self.partition.0).unwrap_or(i32::MAX);
        let mut others = Vec::new();
        if let Some(snapshot) = writer_snapshot {
            let topic = self.ctx.names.writer_state(&self.topic);
            for (key, value) in snapshot.encode() {
                let record = FutureRecord::to(&topic)
                    .partition(p)
                    .key(&key)
                    .payload(&value);
                others.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
            }
        }
        let mut deliveries = Vec::with_capacity(writes.len());
        for &i in writes {
            let (Some(append), Some(Ok(Decision::Write { appended, .. }))) =
                (batch.appends.get(i), plan.decisions.get(i))
            else {
                continue;
            };
            let request = &append.request;
            let mut futures = Vec::with_capacity(request.events.len());
            for (event, version) in request.events.iter().zip(appended.versions()) {
                let headers = record::headers(event, version, request.command.as_ref());
                let record = FutureRecord::to(&self.events)
                    .partition(p)
                    .key(request.stream.id())
                    .payload(&event.payload)
                    .headers(headers);
                futures.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
            }
            deliveries.push(futures);
        }
        let topic = self.ctx.names.snapshots(&self.topic);
        for &(i, covers) in &plan.snapshots {
            let Some((snapshot, _)) = batch.snapshots.get(i) else {
                continue;
            };
            let record = FutureRecord::to(&topic)
                .partition(p)
                .key(snapshot.stream.id())
                .payload(&snapshot.payload)
                .headers(record::snapshot_headers(snapshot, covers));
            others.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
        }
        Ok((deliveries, others))
    }

    /// Answers the routed commands of the batch on the replies topic: those whose events
    /// were just written (from the request and the offsets the broker gave) and those
    /// answered without events. Returns their commands-partition offsets.
    async fn send_answers(
        &self,
        batch: &Batch,
        plan: &Plan,
        writes: &[usize],
        offsets: &[Vec<Offset>],
    ) -> Result<Vec<i64>, Failure> {
        let mut answered = Vec::new();
        let mut futures = Vec::new();
        let replies = self.ctx.names.replies(&self.ctx.group);
        let mut send = |reply_to: &ReplyTo,
                        command: &str,
                        stream: &str,
                        outcome: &str,
                        value: &[u8]|
         -> Result<(), Failure> {
            let record = FutureRecord::to(&replies)
                .partition(reply_to.partition)
                .key(command)
                .payload(value)
                .headers(protocol::reply_headers(
                    command,
                    &reply_to.request,
                    &reply_to.instance,
                    stream,
                    outcome,
                ));
            futures.push(
                self.producer
                    .send_result(record)
                    .map_err(|(e, _)| classify(&e))?,
            );
            Ok(())
        };
        for (&i, offsets) in writes.iter().zip(offsets) {
            let (Some(append), Some(Ok(Decision::Write { appended, .. }))) =
                (batch.appends.get(i), plan.decisions.get(i))
            else {
                continue;
            };
            let Some(consumed) = &append.routed else {
                continue;
            };
            let appended = Appended {
                offsets: offsets.clone(),
                ..appended.clone()
            };
            let value = protocol::committed_from_append(&append.request, &appended);
            send(
                &consumed.reply_to,
                consumed.command_id.as_str(),
                consumed.stream.id(),
                protocol::COMMITTED,
                &value,
            )?;
            answered.push(consumed.offset);
        }
        for (answer, _) in &batch.answers {
            let c = &answer.consumed;
            send(
                &c.reply_to,
                c.command_id.as_str(),
                c.stream.id(),
                answer.outcome,
                &answer.value,
            )?;
            answered.push(c.offset);
        }
        for f in futures {
            deliver(f).await?;
        }
        Ok(answered)
    }

    /// Adds the commands partition's consumer offset (its low watermark) to the
    /// transaction, when it moved.
    async fn send_offsets(&self, answered: &[i64]) -> Result<Option<i64>, Failure> {
        let Some(commands) = self.shared.commands() else {
            return Ok(None);
        };
        let Some(watermark) = commands.watermark(answered) else {
            return Ok(None);
        };
        let Some(metadata) = (commands.metadata)() else {
            // Not in the group right now: the offset goes with a later transaction.
            return Ok(None);
        };
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(
                &commands.topic,
                commands.partition,
                rdkafka::Offset::Offset(watermark),
            )
            .map_err(|e| classify(&e))?;
        let producer = self.producer.clone();
        let timeout = self.ctx.timeout;
        tokio::task::spawn_blocking(move || {
            producer.send_offsets_to_transaction(&offsets, &metadata, timeout)
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
        .map_err(|e| classify(&e))?;
        Ok(Some(watermark))
    }

    pub(super) async fn commit(&mut self) -> Result<(), Failure> {
        let deadline = tokio::time::Instant::now() + self.ctx.timeout;
        loop {
            let producer = self.producer.clone();
            let timeout = self.ctx.timeout;
            let result = tokio::task::spawn_blocking(move || producer.commit_transaction(timeout))
                .await
                .unwrap_or(Err(KafkaError::Canceled));
            match result {
                Ok(()) => return Ok(()),
                Err(e) if is_retriable(&e) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "committing the transaction again");
                }
                Err(e) => {
                    return Err(match classify(&e) {
                        Failure::Aborted(d) => self.abort(d).await,
                        other => other,
                    });
                }
            }
        }
    }

    /// Aborts the open transaction; the failure to report.
    pub(super) async fn abort(&mut self, reason: String) -> Failure {
        let producer = self.producer.clone();
        let timeout = self.ctx.timeout;
        match tokio::task::spawn_blocking(move || producer.abort_transaction(timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
        {
            Ok(()) => Failure::Aborted(reason),
            Err(e) => match classify(&e) {
                Failure::Fenced(d) => Failure::Fenced(d),
                _ => Failure::Unknown(format!("{reason}; aborting failed too: {e}")),
            },
        }
    }
}

/// The offset a record was written at, once acknowledged.
async fn deliver(f: DeliveryFuture) -> Result<Offset, Failure> {
    match f.await {
        Ok(Ok(delivery)) => Ok(Offset(u64::try_from(delivery.offset).unwrap_or(0))),
        Ok(Err((e, _))) => Err(match classify(&e) {
            Failure::Fenced(d) => Failure::Fenced(d),
            _ => Failure::Unknown(format!("a record was not delivered: {e}")),
        }),
        Err(_) => Err(Failure::Unknown(
            "the producer dropped a delivery report".into(),
        )),
    }
}

/// Waits for the acknowledgement of every record; the offsets of each write's events.
async fn delivered(
    deliveries: Vec<Vec<DeliveryFuture>>,
    others: Vec<DeliveryFuture>,
) -> Result<Vec<Vec<Offset>>, Failure> {
    for f in others {
        deliver(f).await?;
    }
    let mut offsets = Vec::with_capacity(deliveries.len());
    for futures in deliveries {
        let mut these = Vec::with_capacity(futures.len());
        for f in futures {
            these.push(deliver(f).await?);
        }
        offsets.push(these);
    }
    Ok(offsets)
}

/// How long a retried batch waits before its next transaction.
pub(super) const RETRY_BACKOFF: Duration = Duration::from_millis(20);
