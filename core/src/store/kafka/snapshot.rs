//! Writer-state snapshots: the stream-version index and the command ids within the window of
//! one partition, with the offset they cover, in the compacted writer-state topic.
//!
//! A snapshot is written in the same transaction as a batch of events (it describes the state
//! before that batch, so its `covers` offset is known), split into chunks of at most
//! [`CHUNK_BYTES`] keyed `chunk-<i>` in the partition of the same number: compaction keeps the
//! latest record of each chunk, so the topic holds about one snapshot per partition. A
//! takeover reads the partition, keeps the newest complete snapshot (chunk 0 names it and how
//! many chunks it has; a chunk left over from an older, larger snapshot is ignored) and then
//! reads the events partition from `covers` to its end.
//!
//! Snapshots cost a read of the whole index, so the writer takes one only after as many
//! appends as the index has rows (and at least [`KafkaStoreBuilder::writer_snapshot_every`]):
//! the cost per append stays constant and the tail a takeover reads stays short.
//!
//! [`KafkaStoreBuilder::writer_snapshot_every`]: super::KafkaStoreBuilder::writer_snapshot_every

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::envelope::{Fingerprint, Timestamp};
use crate::ids::{Offset, StreamVersion};

/// The largest chunk of a snapshot, in bytes of JSON (well below Kafka's 1 MiB record limit).
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;

/// A command id in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotCommand {
    pub(crate) stream: String,
    pub(crate) command: String,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) first_version: StreamVersion,
    pub(crate) offsets: Vec<Offset>,
    pub(crate) committed_at: Timestamp,
}

/// A partition's writer state: what the records below `covers` say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct WriterSnapshot {
    pub(crate) covers: Offset,
    pub(crate) streams: Vec<(String, StreamVersion)>,
    pub(crate) commands: Vec<SnapshotCommand>,
}

/// One record of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
struct Chunk {
    /// Identifies the snapshot all chunks belong to.
    snapshot: String,
    covers: Offset,
    chunk: usize,
    chunks: usize,
    #[serde(default)]
    streams: Vec<(String, StreamVersion)>,
    #[serde(default)]
    commands: Vec<SnapshotCommand>,
}

/// The key of chunk `i`.
pub(crate) fn chunk_key(i: usize) -> String {
    format!("chunk-{i:05}")
}

impl WriterSnapshot {
    /// The snapshot as `(key, value)` records.
    pub(crate) fn encode(&self) -> Vec<(String, Vec<u8>)> {
        let id = uuid::Uuid::now_v7().to_string();
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut current = Chunk {
            snapshot: id.clone(),
            covers: self.covers,
            chunk: 0,
            chunks: 0,
            streams: Vec::new(),
            commands: Vec::new(),
        };
        let mut size = 0usize;
        let flush = |current: &mut Chunk, size: &mut usize, chunks: &mut Vec<Chunk>| {
            let next = Chunk {
                snapshot: id.clone(),
                covers: self.covers,
                chunk: chunks.len() + 1,
                chunks: 0,
                streams: Vec::new(),
                commands: Vec::new(),
            };
            chunks.push(std::mem::replace(current, next));
            *size = 0;
        };
        for (stream, version) in &self.streams {
            size += stream.len() + 24;
            current.streams.push((stream.clone(), *version));
            if size >= CHUNK_BYTES {
                flush(&mut current, &mut size, &mut chunks);
            }
        }
        for command in &self.commands {
            size += command.stream.len() + command.command.len() + 160 + 24 * command.offsets.len();
            current.commands.push(command.clone());
            if size >= CHUNK_BYTES {
                flush(&mut current, &mut size, &mut chunks);
            }
        }
        if chunks.is_empty() || !current.streams.is_empty() || !current.commands.is_empty() {
            chunks.push(current);
        }
        let n = chunks.len();
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                c.chunk = i;
                c.chunks = n;
                // A struct of strings and numbers always serialises.
                (chunk_key(i), serde_json::to_vec(&c).unwrap_or_default())
            })
            .collect()
    }

    /// The newest complete snapshot among the latest record of each key, if any.
    pub(crate) fn decode(latest: &HashMap<String, Vec<u8>>) -> Option<Self> {
        let parse =
            |i: usize| -> Option<Chunk> { serde_json::from_slice(latest.get(&chunk_key(i))?).ok() };
        let first = parse(0)?;
        let mut snapshot = Self {
            covers: first.covers,
            streams: Vec::new(),
            commands: Vec::new(),
        };
        let (id, n) = (first.snapshot.clone(), first.chunks);
        let mut add = |c: Chunk| {
            snapshot.streams.extend(c.streams);
            snapshot.commands.extend(c.commands);
        };
        add(first);
        for i in 1..n {
            let c = parse(i)?;
            if c.snapshot != id {
                tracing::warn!(
                    chunk = i,
                    "incomplete writer-state snapshot; replaying the partition instead"
                );
                return None;
            }
            add(c);
        }
        Some(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_snapshot_splits_into_chunks_and_decodes_whole() {
        let snapshot = WriterSnapshot {
            covers: Offset(1234),
            streams: (0..20_000)
                .map(|i| (format!("stream-{i}"), StreamVersion(i)))
                .collect(),
            commands: (0..3_000)
                .map(|i| SnapshotCommand {
                    stream: format!("stream-{i}"),
                    command: format!("cmd-{i}"),
                    fingerprint: Fingerprint::of_bytes(&[1]),
                    first_version: StreamVersion(1),
                    offsets: vec![Offset(i), Offset(i + 1)],
                    committed_at: Timestamp(i as i64),
                })
                .collect(),
        };
        let records = snapshot.encode();
        assert!(records.len() > 1, "split into {} chunks", records.len());
        assert!(records.iter().all(|(_, v)| v.len() < 2 * CHUNK_BYTES));
        let mut latest: HashMap<String, Vec<u8>> = records.into_iter().collect();
        assert_eq!(WriterSnapshot::decode(&latest), Some(snapshot.clone()));

        // A newer, smaller snapshot overwrites chunk 0 only: the stale chunks are ignored.
        let small = WriterSnapshot {
            covers: Offset(2000),
            streams: vec![("a".into(), StreamVersion(3))],
            commands: Vec::new(),
        };
        latest.extend(small.encode());
        assert_eq!(WriterSnapshot::decode(&latest), Some(small));

        // A chunk of another snapshot in the middle means the snapshot is incomplete.
        let mut torn: HashMap<String, Vec<u8>> = snapshot.encode().into_iter().collect();
        let other = snapshot.encode();
        torn.insert(other[1].0.clone(), other[1].1.clone());
        assert_eq!(WriterSnapshot::decode(&torn), None);
        assert_eq!(WriterSnapshot::decode(&HashMap::new()), None);
    }
}
