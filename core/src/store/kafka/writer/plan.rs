//! Deciding a batch: each request against the local store's index, in order.

use std::collections::HashMap;

use crate::ids::{CommandId, Offset, StreamId, StreamVersion};
use crate::store::ledger::{Decision, Ledger};
use crate::store::{Error, Result};

use super::{Batch, Writer};

/// One batch's plan: what each request gets and what to write.
pub(super) struct Plan {
    pub(super) decisions: Vec<Result<Decision>>,
    /// For a replay of a command written earlier in the same batch: the writer's index.
    pub(super) replay_of: Vec<Option<usize>>,
    pub(super) versions: HashMap<StreamId, StreamVersion>,
    pub(super) snapshot_answers: Vec<Result<()>>,
    /// The accepted aggregate snapshots (indexes into the batch's snapshots), with the offset
    /// of the event each covers when the local store knows it.
    pub(super) snapshots: Vec<(usize, Option<Offset>)>,
}

impl Plan {
    /// A plan that writes nothing of the batch's requests (a snapshot alone, answers alone).
    pub(super) fn empty() -> Self {
        Self {
            decisions: Vec::new(),
            replay_of: Vec::new(),
            versions: HashMap::new(),
            snapshot_answers: Vec::new(),
            snapshots: Vec::new(),
        }
    }

    /// The indexes of the appends this plan writes.
    pub(super) fn writes(&self) -> Vec<usize> {
        self.decisions
            .iter()
            .enumerate()
            .filter_map(|(i, d)| matches!(d, Ok(Decision::Write { .. })).then_some(i))
            .collect()
    }
}

impl Writer {
    /// Decides every request against the local store's index.
    pub(super) async fn plan(&self, batch: &Batch) -> Result<Plan> {
        let mut seen = std::collections::HashSet::new();
        let streams: Vec<&StreamId> = batch
            .appends
            .iter()
            .map(|a| &a.request.stream)
            .chain(batch.snapshots.iter().map(|(s, _)| &s.stream))
            .filter(|s| seen.insert(*s))
            .collect();
        let commands: Vec<(&StreamId, &CommandId)> = batch
            .appends
            .iter()
            .filter_map(|a| {
                a.request
                    .command
                    .as_ref()
                    .map(|c| (&a.request.stream, &c.id))
            })
            .collect();
        let (versions, commands) = self
            .state
            .ledger(&streams, &commands, self.ctx.window_start())
            .await?;
        let mut ledger = Ledger::new(self.partitions);
        ledger.topics.insert(self.topic.clone(), self.partitions);
        ledger.streams = versions.into_iter().collect();
        ledger.commands = commands.into_iter().collect();
        let mut written: HashMap<(StreamId, CommandId), usize> = HashMap::new();
        let mut decisions = Vec::with_capacity(batch.appends.len());
        let mut replay_of = Vec::with_capacity(batch.appends.len());
        for (i, append) in batch.appends.iter().enumerate() {
            let request = &append.request;
            let decision = ledger.decide(request);
            let key = request
                .command
                .as_ref()
                .map(|c| (request.stream.clone(), c.id.clone()));
            match (&decision, key) {
                (Ok(Decision::Write { .. }), Some(key)) => {
                    written.insert(key, i);
                    replay_of.push(None);
                }
                (Ok(Decision::Replay(_)), Some(key)) => replay_of.push(written.get(&key).copied()),
                _ => replay_of.push(None),
            }
            decisions.push(decision);
        }
        let mut latest: HashMap<&StreamId, usize> = HashMap::new();
        let snapshot_answers = batch
            .snapshots
            .iter()
            .enumerate()
            .map(|(i, (snapshot, _))| {
                let actual = ledger
                    .streams
                    .get(&snapshot.stream)
                    .copied()
                    .unwrap_or_default();
                if snapshot.version > actual {
                    return Err(Error::SnapshotAhead {
                        stream: snapshot.stream.clone(),
                        version: snapshot.version,
                        actual,
                    });
                }
                match latest.get(&snapshot.stream) {
                    Some(&j)
                        if batch
                            .snapshots
                            .get(j)
                            .is_some_and(|(earlier, _)| !snapshot.supersedes(earlier)) => {}
                    _ => {
                        latest.insert(&snapshot.stream, i);
                    }
                }
                Ok(())
            })
            .collect();
        let mut accepted: Vec<usize> = latest.into_values().collect();
        accepted.sort_unstable();
        let mut snapshots = Vec::with_capacity(accepted.len());
        for i in accepted {
            let covers = match batch.snapshots.get(i) {
                Some((s, _)) => self.state.offset_of(&s.stream, s.version).await?,
                None => None,
            };
            snapshots.push((i, covers));
        }
        Ok(Plan {
            decisions,
            replay_of,
            versions: ledger.streams.into_iter().collect(),
            snapshot_answers,
            snapshots,
        })
    }
}
