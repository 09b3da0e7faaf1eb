//! Effects with exactly-once outcomes: commands (or outputs) decided while a batch is applied,
//! each under a command id derived from what triggered it, sent before the batch commits.
//!
//! A reader that sends commands cannot commit them in its view store's transaction: they go
//! to the event store. So it sends them *before* committing its state and checkpoint, under
//! command ids that a replay derives again the same way. If it crashes after sending and
//! before committing, the replay decides the same commands under the same ids, and the event
//! store answers each one with its first result: nothing is written twice.
//!
//! Ids are derived from the reader's name and either the position of the triggering record
//! (`send`) or the instance and a label (`send_once`, one per instance and label whatever
//! triggers it). A derived id that would not be a valid [`CommandId`] (too long, a key with
//! other characters) is replaced by `<name>:h:<hash>` of the same parts.

use std::collections::HashMap;

use futures::StreamExt;
use keel::{CommandId, CommandOptions, Fingerprint, Position, RecordedEvent, Timestamp};
use uuid::Uuid;

use crate::error::BoxError;

/// What triggered a reader's decision: a record, or a timer of an instance.
#[derive(Debug, Clone)]
pub(crate) enum Trigger {
    /// A record of the log.
    Record {
        position: Position,
        event_id: Uuid,
        correlation_id: Option<Uuid>,
    },
    /// A timer of an instance firing at its time.
    Timer { name: String, at: Timestamp },
}

impl Trigger {
    pub(crate) fn record(record: &RecordedEvent) -> Self {
        Self::Record {
            position: record.position.clone(),
            event_id: record.event_id,
            correlation_id: record.correlation_id,
        }
    }
}

/// A command id made of `parts`, joined with `.` after the reader's name: as is when valid,
/// else a hash of the same parts.
pub(crate) fn derive_id(name: &str, parts: &[&str]) -> CommandId {
    let plain = std::iter::once(name)
        .chain(parts.iter().copied())
        .collect::<Vec<_>>()
        .join(".");
    CommandId::new(&plain).unwrap_or_else(|_| {
        let hash = Fingerprint::of_bytes(plain.as_bytes());
        let hex: String = hash.0[..20].iter().map(|b| format!("{b:02x}")).collect();
        let short: String = name.chars().take(64).collect();
        CommandId::new(format!("{short}:h:{hex}")).unwrap_or_else(|_| {
            CommandId::new(format!("h:{hex}")).unwrap_or_else(|_| CommandId::random())
        })
    })
}

/// Timers set (`Some`) or cancelled (`None`) by one reaction, by name, in order.
pub(crate) type TimerChanges = Vec<(String, Option<Timestamp>)>;

/// One command decided by a reader, with its options (the derived command id, causation and
/// correlation).
#[derive(Debug)]
pub struct Effect<C> {
    /// What to send.
    pub command: C,
    /// Its command id and the ids tying it to what caused it.
    pub options: CommandOptions,
    /// Commands to one target are sent in order; to different targets, concurrently.
    pub(crate) target: String,
}

/// The commands a process manager decides while it handles one record or one timer. Each
/// gets a command id derived from the trigger: see the [module docs](self).
#[derive(Debug)]
pub struct Effects<C> {
    name: &'static str,
    key: String,
    trigger: Trigger,
    sent: Vec<Effect<C>>,
    timers: TimerChanges,
    finished: bool,
}

impl<C> Effects<C> {
    pub(crate) fn new(name: &'static str, key: String, trigger: Trigger) -> Self {
        Self {
            name,
            key,
            trigger,
            sent: Vec::new(),
            timers: Vec::new(),
            finished: false,
        }
    }

    /// The instance handled (the key the process manager gave).
    pub fn key(&self) -> &str {
        &self.key
    }

    fn options(&self, id: CommandId) -> CommandOptions {
        let (causation_id, correlation_id) = match &self.trigger {
            Trigger::Record {
                event_id,
                correlation_id,
                ..
            } => (Some(*event_id), Some(correlation_id.unwrap_or(*event_id))),
            Trigger::Timer { .. } => (None, None),
        };
        CommandOptions {
            command_id: Some(id),
            correlation_id,
            causation_id,
            ..CommandOptions::default()
        }
    }

    /// Sends `command` to `target` (the aggregate it goes to: commands to one target are sent
    /// in the order decided) under a command id derived from the triggering record's position
    /// and how many commands it triggered before (or, for a timer, from the instance, the
    /// timer and its time).
    pub fn send(&mut self, target: impl Into<String>, command: C) {
        let n = self.sent.len().to_string();
        let id = match &self.trigger {
            Trigger::Record { position, .. } => derive_id(
                self.name,
                &[
                    position.topic.as_str(),
                    &position.partition.0.to_string(),
                    &position.offset.0.to_string(),
                    &n,
                ],
            ),
            Trigger::Timer { name, at } => derive_id(
                self.name,
                &[&self.key, "timer", name, &at.0.to_string(), &n],
            ),
        };
        let options = self.options(id);
        self.sent.push(Effect {
            command,
            options,
            target: target.into(),
        });
    }

    /// Sends `command` to `target` under a command id derived from the instance and `label`
    /// only: one command per instance and label, whichever record or timer decides it. A
    /// replay that decided differently (another command under the same id) is refused by the
    /// event store as a reused command id, never applied twice.
    pub fn send_once(&mut self, label: &str, target: impl Into<String>, command: C) {
        let id = derive_id(self.name, &[&self.key, label]);
        let options = self.options(id);
        self.sent.push(Effect {
            command,
            options,
            target: target.into(),
        });
    }

    /// Starts (or moves) the instance's timer `name` to fire when recorded time reaches `at`.
    pub fn set_timer(&mut self, name: impl Into<String>, at: Timestamp) {
        self.timers.push((name.into(), Some(at)));
    }

    /// Stops the instance's timer `name`, if set.
    pub fn cancel_timer(&mut self, name: impl Into<String>) {
        self.timers.push((name.into(), None));
    }

    /// Ends the instance: its state and timers are dropped, and later records for its key
    /// are passed over.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    pub(crate) fn into_parts(self) -> (Vec<Effect<C>>, TimerChanges, bool) {
        (self.sent, self.timers, self.finished)
    }
}

/// Sends effects: in order per target, targets concurrently (up to `concurrency` at once).
/// Stops at the first error (the others of its batch may have been sent: their ids make the
/// batch's replay answer them from the log).
pub(crate) async fn dispatch<C, F, Fut>(
    effects: Vec<Effect<C>>,
    concurrency: usize,
    send: F,
) -> Result<(), BoxError>
where
    F: Fn(C, CommandOptions) -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    if effects.is_empty() {
        return Ok(());
    }
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<Effect<C>>> = HashMap::new();
    for effect in effects {
        if !groups.contains_key(&effect.target) {
            order.push(effect.target.clone());
        }
        groups
            .entry(effect.target.clone())
            .or_default()
            .push(effect);
    }
    let send = &send;
    let mut runs = futures::stream::iter(order.into_iter().filter_map(|t| groups.remove(&t)))
        .map(|group| async move {
            for effect in group {
                send(effect.command, effect.options).await?;
            }
            Ok::<(), BoxError>(())
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(result) = runs.next().await {
        result?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_always_valid() {
        let a = derive_id("validation", &["order", "3", "17", "0"]);
        assert_eq!(a.as_str(), "validation.order.3.17.0");
        assert_eq!(a, derive_id("validation", &["order", "3", "17", "0"]));
        let odd = derive_id("pm", &["a key with spaces/and slashes", "decision"]);
        assert!(odd.as_str().starts_with("pm:h:"), "{odd}");
        assert_eq!(
            odd,
            derive_id("pm", &["a key with spaces/and slashes", "decision"])
        );
        let long = "x".repeat(400);
        let hashed = derive_id("pm", &[&long]);
        assert!(hashed.as_str().len() < 100);
        assert_ne!(hashed, derive_id("pm", &[&"y".repeat(400)]));
    }
}
