//! [`Routed`]: commands of one aggregate type, run wherever their stream's owner is.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use serde::de::DeserializeOwned;

use crate::aggregate::{Command as _, Handle};
use crate::ids::{CommandId, Partition, StreamId, Topic};
use crate::repository::{CommandOptions, Committed, Error, Repository};
use crate::store::{self, EventStore};

use super::protocol::{self, Outgoing};
use super::service::Inner;

/// Runs commands of aggregate `A` on the instance that owns their stream's partition: in
/// process when that is this instance, else through the commands topic. Made by
/// [`Service::serve`](super::Service::serve); clones share everything.
///
/// Either way the caller gets what [`Repository::execute_with`] returns on the owner: the
/// committed events with their positions, or the aggregate's own error
/// ([`Error::Rejected`]), typed. A routed command without an answer within the
/// [`timeout`](Self::timeout) fails with [`store::Error::Timeout`]: it may have been applied
/// or not, and sending it again with the same command id tells which — it is never applied
/// twice. (A command without a command id gets a fresh one for the trip, so the owner never
/// applies it twice either; only its caller cannot ask again.)
pub struct Routed<A: Handle, S: EventStore + ?Sized> {
    inner: Arc<Inner>,
    repository: Repository<A, S>,
    topic: Topic,
    partitions: u32,
    timeout: Duration,
    always_route: bool,
}

impl<A: Handle, S: EventStore + ?Sized> Clone for Routed<A, S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            repository: self.repository.clone(),
            topic: self.topic.clone(),
            partitions: self.partitions,
            timeout: self.timeout,
            always_route: self.always_route,
        }
    }
}

impl<A: Handle, S: EventStore + ?Sized> std::fmt::Debug for Routed<A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routed")
            .field("topic", &self.topic)
            .field("instance", &self.inner.instance)
            .field("timeout", &self.timeout)
            .field("always_route", &self.always_route)
            .finish_non_exhaustive()
    }
}

impl<A, S> Routed<A, S>
where
    A: Handle,
    A::Error: DeserializeOwned,
    S: EventStore + ?Sized,
{
    pub(crate) fn new(
        inner: Arc<Inner>,
        repository: Repository<A, S>,
        topic: Topic,
        partitions: u32,
    ) -> Self {
        Self {
            timeout: inner.command_timeout,
            inner,
            repository,
            topic,
            partitions,
            always_route: false,
        }
    }

    /// How long a routed command waits for its answer (default: the service's
    /// [`command_timeout`](super::ServiceBuilder::command_timeout)).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends every command through the commands topic, even when this instance owns its
    /// partition (default `false`): for tests and benches of the routed path.
    #[must_use]
    pub fn always_route(mut self, always: bool) -> Self {
        self.always_route = always;
        self
    }

    /// The repository commands run through on this instance.
    pub fn repository(&self) -> &Repository<A, S> {
        &self.repository
    }

    /// The partition of aggregate `id`'s stream.
    ///
    /// # Errors
    ///
    /// [`IdError`](crate::IdError) when `id` is not a valid stream id.
    pub fn partition_of(&self, id: &str) -> Result<Partition, crate::IdError> {
        let stream = StreamId::in_topic(&self.topic, id)?;
        Ok(crate::partitioner::partition_for(
            stream.id().as_bytes(),
            self.partitions,
        ))
    }

    /// Runs `command` on aggregate `id` without a command id (see
    /// [`execute_with`](Self::execute_with)).
    ///
    /// # Errors
    ///
    /// As [`execute_with`](Self::execute_with).
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
    ) -> Result<Committed<A::Event>, Error<A::Error>> {
        self.execute_with(id, command, CommandOptions::default())
            .await
    }

    /// Runs `command` on aggregate `id`: in process when this instance owns its partition,
    /// else on the owner, through the commands topic, waiting for the answer up to the
    /// [`timeout`](Self::timeout). A command whose partition moves away while it runs here
    /// is sent to the new owner.
    ///
    /// # Errors
    ///
    /// As [`Repository::execute_with`] on the owner, plus [`store::Error::Timeout`] when no
    /// answer came in time.
    #[tracing::instrument(level = "debug", skip_all, fields(kind = A::KIND, id, command = command.name()))]
    pub async fn execute_with(
        &self,
        id: &str,
        command: A::Command,
        options: CommandOptions,
    ) -> Result<Committed<A::Event>, Error<A::Error>> {
        let stream = StreamId::in_topic(&self.topic, id)?;
        let partition = crate::partitioner::partition_for(stream.id().as_bytes(), self.partitions);
        if !self.always_route && self.inner.store.owns(&self.topic, partition) {
            match self
                .repository
                .execute_with(id, command.clone(), options.clone())
                .await
            {
                // The partition moved away meanwhile: nothing was written here.
                Err(Error::Store(store::Error::NotOwner { .. })) => {
                    tracing::debug!(%stream, %partition, "the partition moved away; routing the command");
                }
                other => return other,
            }
        }
        self.route(stream, partition, command, options).await
    }

    /// Sends a command to its partition's owner and waits for the answer.
    async fn route(
        &self,
        stream: StreamId,
        partition: Partition,
        command: A::Command,
        options: CommandOptions,
    ) -> Result<Committed<A::Event>, Error<A::Error>> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let command_id = options.command_id.clone().unwrap_or_else(CommandId::random);
        let payload = serde_json::to_vec(&command).map_err(Error::Fingerprint)?;
        let request = uuid::Uuid::now_v7().to_string();
        let headers = protocol::command_headers(&Outgoing {
            command_id: &command_id,
            request: &request,
            command: command.name(),
            reply_to: &self.inner.instance,
            reply_partition: self.inner.reply_partition,
            correlation_id: options.correlation_id,
            causation_id: options.causation_id,
            metadata: &options.metadata,
            expect_new: options.expect_new,
        });
        let commands = self.inner.store.ctx().names.commands(&self.topic);
        // Waiting before sending: an answer cannot come before its waiter.
        let mut waiting = self.inner.replies.wait_for(&request);
        let record = FutureRecord::to(&commands)
            .partition(i32::try_from(partition.0).unwrap_or(i32::MAX))
            .key(stream.id())
            .payload(&payload)
            .headers(headers);
        let timeout = Error::Store(store::Error::Timeout {
            topic: self.topic.clone(),
            partition,
            stream: stream.clone(),
            command_id: command_id.clone(),
            waited: self.timeout,
        });
        let sent =
            tokio::time::timeout_at(deadline, self.inner.producer.send(record, self.timeout)).await;
        match sent {
            Err(_) => return Err(timeout),
            Ok(Err((e, _))) => {
                return Err(Error::Store(store::Error::backend(
                    "route a command",
                    format!("topic {commands} partition {partition}: {e}"),
                )));
            }
            Ok(Ok(_)) => {}
        }
        match tokio::time::timeout_at(deadline, waiting.answer()).await {
            Ok(Some(value)) => protocol::outcome::<A>(&self.topic, &value),
            Ok(None) => Err(Error::Store(store::Error::Closed)),
            Err(_) => Err(timeout),
        }
    }
}
