//! The decision every backend makes for an append, written once: replay a committed command,
//! refuse a conflict, or place the events (partition, versions, offsets).
//!
//! A backend fills a [`Ledger`] with what it knows (the memory store: everything; the SQLite
//! writer: what one batch touches, read inside the batch's transaction), then asks it to
//! [`decide`](Ledger::decide) each request in order. Each decision updates the ledger, so a
//! later request in the same batch sees the earlier ones.

use crate::envelope::Fingerprint;
use crate::ids::{CommandId, Offset, Partition, StreamId, StreamVersion, Topic};
use crate::store::{AppendRequest, Appended, CommandRecord, Error, FastMap, Result, validate};

/// What to do with one append.
#[derive(Debug)]
pub(crate) enum Decision {
    /// The command id was committed before: answer with the first result.
    Replay(Appended),
    /// Write the events where this says; `new_topic` is set when the topic must be created
    /// with that partition count.
    Write {
        appended: Appended,
        #[cfg_attr(
            not(feature = "sqlite"),
            expect(dead_code, reason = "only the SQLite writer creates topics in a batch")
        )]
        new_topic: Option<u32>,
    },
}

/// What a backend knows about streams, commands, topics and partition heads.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Current version per stream; absent means 0.
    pub(crate) streams: FastMap<StreamId, StreamVersion>,
    /// Committed commands; absent means never committed.
    pub(crate) commands: FastMap<(StreamId, CommandId), CommandRecord>,
    /// Partition count per topic; absent means the topic does not exist yet.
    pub(crate) topics: FastMap<Topic, u32>,
    /// Next offset per partition; absent means 0.
    pub(crate) heads: FastMap<(Topic, Partition), Offset>,
    /// The partition count of topics created by an append.
    pub(crate) default_partitions: u32,
}

impl Ledger {
    pub(crate) fn new(default_partitions: u32) -> Self {
        Self {
            default_partitions,
            ..Self::default()
        }
    }

    /// Decides one append and, when it is to be written, records its effects.
    ///
    /// The request must already have passed [`validate::check_append`].
    pub(crate) fn decide(&mut self, request: &AppendRequest) -> Result<Decision> {
        let stream = &request.stream;
        if let Some(command) = &request.command
            && let Some(record) = self.commands.get(&(stream.clone(), command.id.clone()))
        {
            return replay(stream, &command.id, command.fingerprint, record);
        }
        // One lookup for the version, read now and advanced below when the append is placed.
        let version = self.streams.entry(stream.clone());
        let actual = match &version {
            std::collections::hash_map::Entry::Occupied(v) => *v.get(),
            std::collections::hash_map::Entry::Vacant(_) => StreamVersion::default(),
        };
        if !request.expected.admits(actual) {
            return Err(Error::Conflict {
                stream: stream.clone(),
                expected: request.expected,
                actual,
            });
        }
        let topic = stream.topic();
        let (partitions, new_topic) = match self.topics.get(topic) {
            Some(&n) => (n, None),
            None => {
                validate::check_partitions(topic, self.default_partitions)?;
                self.topics.insert(topic.clone(), self.default_partitions);
                (self.default_partitions, Some(self.default_partitions))
            }
        };
        let partition = validate::partition_of(stream, partitions);
        let head = self
            .heads
            .entry((topic.clone(), partition))
            .or_insert(Offset(0));
        let first = head.0;
        let count = request.events.len() as u64;
        head.0 += count;
        let appended = Appended {
            stream: stream.clone(),
            partition,
            first_version: actual.next(),
            offsets: (first..first + count).map(Offset).collect(),
            replayed: false,
        };
        version.insert_entry(StreamVersion(actual.0 + count));
        if let Some(command) = &request.command {
            self.commands.insert(
                (stream.clone(), command.id.clone()),
                CommandRecord {
                    fingerprint: command.fingerprint,
                    appended: appended.clone(),
                },
            );
        }
        Ok(Decision::Write {
            appended,
            new_topic,
        })
    }
}

impl Ledger {
    /// Decides appends that commit together or not at all: each in order, as
    /// [`decide`](Self::decide) does; on the first error every effect of the earlier ones is
    /// undone, so the ledger is as before the call, and that error is returned.
    pub(crate) fn decide_all<'r>(
        &mut self,
        requests: impl IntoIterator<Item = &'r AppendRequest>,
    ) -> Result<Vec<Decision>> {
        let mut undo = Vec::new();
        let mut decisions = Vec::new();
        for request in requests {
            let saved = self.save(request);
            match self.decide(request) {
                Ok(decision) => {
                    undo.push(saved);
                    decisions.push(decision);
                }
                Err(error) => {
                    self.restore(saved);
                    while let Some(saved) = undo.pop() {
                        self.restore(saved);
                    }
                    return Err(error);
                }
            }
        }
        Ok(decisions)
    }

    /// What deciding `request` may change, as it is now.
    fn save(&self, request: &AppendRequest) -> Saved {
        let stream = &request.stream;
        let topic = stream.topic();
        let partitions = self
            .topics
            .get(topic)
            .copied()
            .unwrap_or(self.default_partitions);
        let head_key = (
            topic.clone(),
            validate::partition_of(stream, partitions.max(1)),
        );
        Saved {
            version: (stream.clone(), self.streams.get(stream).copied()),
            command: request.command.as_ref().map(|c| {
                let key = (stream.clone(), c.id.clone());
                let old = self.commands.get(&key).cloned();
                (key, old)
            }),
            topic: (topic.clone(), self.topics.get(topic).copied()),
            head: (head_key.clone(), self.heads.get(&head_key).copied()),
        }
    }

    fn restore(&mut self, saved: Saved) {
        fn put<K: std::hash::Hash + Eq, V>(map: &mut FastMap<K, V>, key: K, old: Option<V>) {
            match old {
                Some(v) => {
                    map.insert(key, v);
                }
                None => {
                    map.remove(&key);
                }
            }
        }
        put(&mut self.heads, saved.head.0, saved.head.1);
        put(&mut self.topics, saved.topic.0, saved.topic.1);
        if let Some((key, old)) = saved.command {
            put(&mut self.commands, key, old);
        }
        put(&mut self.streams, saved.version.0, saved.version.1);
    }
}

/// The ledger entries one decision may change, as they were before it.
struct Saved {
    version: (StreamId, Option<StreamVersion>),
    command: Option<((StreamId, CommandId), Option<CommandRecord>)>,
    topic: (Topic, Option<u32>),
    head: ((Topic, Partition), Option<Offset>),
}

fn replay(
    stream: &StreamId,
    id: &CommandId,
    fingerprint: Fingerprint,
    record: &CommandRecord,
) -> Result<Decision> {
    if record.fingerprint == fingerprint {
        Ok(Decision::Replay(record.appended.clone().into_replayed()))
    } else {
        Err(Error::CommandIdReused {
            stream: stream.clone(),
            command_id: id.clone(),
        })
    }
}
