//! Several instances of a service on one Kafka log (feature `kafka`): partitions shared
//! through a consumer group, commands routed to the owner of their stream, failover, health.
//!
//! A [`Service`] is one instance. Instances of a service share a group (the store's
//! [`group`](crate::store::kafka::KafkaStoreBuilder::group)); Kafka's consumer-group protocol
//! decides which instance owns which partition, and fencing makes ownership safe. There is no
//! coordinator of Keel's own.
//!
//! # Ownership
//!
//! - Each aggregate kind an instance [serves](Service::serve) has a **commands topic**
//!   (`<topic>.keel-commands`) with as many partitions as its events topic. The instances
//!   join one consumer group over the commands topics with the **cooperative-sticky**
//!   assignor: an instance joining or leaving moves only the partitions that must move.
//! - Being assigned commands partition `p` makes an instance the **only writer** of events
//!   partition `p`. The **takeover order**: in the rebalance callback, before the consumer
//!   reads the partition's committed command offsets, the instance fences every earlier
//!   writer (`init_transactions` for `<group>-<topic>-<p>`, which also aborts a dead owner's
//!   open transaction); then it reads the latest writer-state snapshot and the partition's
//!   tail (`read_committed`), and only then serves commands. No earlier owner can commit past
//!   the offsets it starts from.
//! - On **revocation** the instance stops taking commands of the partition, finishes the ones
//!   running (their transactions commit or abort), lets its writer finish what is queued and
//!   write a writer-state snapshot (so the next owner reads a short tail), and stops
//!   answering for the partition; the rebalance callback returns only then. A killed
//!   instance's partitions move after the group's session timeout
//!   ([`ServiceBuilder::session_timeout`]).
//! - A writer fenced by a new owner lets its partition go; a writer that does not know how
//!   its last transaction ended re-takes its partition only while the partition is still
//!   assigned to it (re-fencing a revoked partition would steal it from its new owner).
//!
//! # Routing
//!
//! [`Routed::execute_with`] runs a command in process when this instance owns the stream's
//! partition. Otherwise it sends the command to the commands topic, keyed by stream id (so
//! it lands in the stream's partition), with a command id (the caller's, or a fresh one) and
//! the caller's reply address, and waits for the answer up to a timeout it sets.
//!
//! The owner consumes the command (`read_committed`) and runs it through the aggregate's
//! repository — **consume-transform-produce in one transaction**: the events it decides, its
//! answer on the replies topic and the command's consumer offset are committed together by
//! the partition's transactional producer (`send_offsets_to_transaction`). A command that
//! writes nothing (rejected, replayed, failed) is answered, with its offset, in the
//! partition's next transaction. Commands of a partition run concurrently (one at a time per
//! stream, as in process), so the offset committed is the lowest one still unanswered.
//!
//! Answers travel on the group's **replies topic** (`<group>.keel-replies`); each instance
//! reads its own partition of it, from where it ended when the instance started. An answer
//! carries the events with their positions, or the aggregate's error serialised with serde
//! (so it comes back typed: [`Error::Rejected`](crate::repository::Error::Rejected)), or a
//! failure.
//!
//! **Exactly once**: a routed command is applied at most once whatever fails, because the
//! owner checks its command id first (within the store's
//! [command window](crate::store::kafka::KafkaStoreBuilder::command_window)). A command whose
//! answer never committed is consumed again by the next owner, which answers with the first
//! result. A caller that timed out, or restarted, sends it again with the same command id
//! and gets the outcome. Commands sent concurrently are applied in no particular order; a
//! caller that needs an order waits for each answer.
//!
//! # Reads
//!
//! An instance reads the streams of the partitions it owns from its local state (loads,
//! `read_stream`). Other streams are read by their owner: route commands, and read views
//! (projections) for queries.
//!
//! # Lag and health
//!
//! - [`health`] (or [`Service::health`]) gives, per partition: the owner (the group member
//!   holding it), the offset after the writer's last commit, and the routed commands waiting
//!   for it. It does not join the group: a command line can show it (`bank health`).
//! - Every [`metrics_every`](ServiceBuilder::metrics_every), each instance logs one
//!   `tracing` event per partition it serves, target `keel::kafka::metrics`, fields `topic`,
//!   `partition`, `owner`, `end` and `pending_commands`; taking a partition over and letting
//!   it go log events on the same target (with `takeover_ms`). Projections log their lag per
//!   partition on `keel::projections::lag` (see `keel-projections`).
//!
//! # Example
//!
//! See [`Service`]. The book's chapter "Running several instances" walks through two bank
//! processes sharing a topic, a failover and a third instance joining.

pub(crate) mod dispatch;
pub(crate) mod group;
mod health;
mod partition_group;
pub(crate) mod protocol;
mod replies;
mod routed;
mod service;

pub use self::health::{PartitionHealth, health};
pub use self::partition_group::{GroupChange, PartitionGroup, Revocation};
pub use self::routed::Routed;
pub use self::service::{Service, ServiceBuilder};
pub use crate::store::kafka::{KafkaStore, KafkaStoreBuilder};
