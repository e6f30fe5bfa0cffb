//! Pushes this node's index to whichever node leads (this node included): one publisher per
//! collection (the shared folder, and the downloads this node offers), each on its own.
//!
//! For every new leader: subscribe to the index's deltas, take a snapshot (version +
//! entries), send it in pages, then send each change as a delta from the version the leader
//! holds. Deltas that arrive together are merged into one message. Every [`CHECK_INTERVAL`]
//! an empty delta checks that the leader still holds our version. Anything unexpected (the
//! leader answers "need snapshot", a delta gap, a lagging subscription, a folder switch)
//! starts over with a snapshot; failures wait [`RETRY`] first. One request is in flight at a
//! time, so the leader sees our messages in order. A leader that leaves our pushes unserved
//! for [`SERVICE_LIMIT`] is deposed: this node stops following it (docs/election.md,
//! "A leader that does not serve").

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use iwant_behaviours::{
    index_sync::{self, Collection, Delta, Request, Response},
    wire,
};
use libp2p::PeerId;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::LeaderHandle;
use crate::{
    net::{LeaderView, NetworkClient},
    share::{IndexDelta, IndexEntry, IndexHandle},
};

/// How often an idle node checks that the leader still holds its index.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(15);

/// How long to wait after a failed push before trying again.
pub const RETRY: Duration = Duration::from_millis(500);

/// How long to wait after the leader refused our index (a bound broken).
pub const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// How long the leader may leave this node's pushes unserved (no answer, or "busy" / "not
/// the leader" while the election says it leads) before this node deposes it
/// ([`NetworkClient::depose`]). With the 10 s request timeout: deposed when the second push
/// in a row times out, about 20 s after the first was sent.
pub const SERVICE_LIMIT: Duration = Duration::from_secs(20);

/// Why a sync round ended.
enum Restart {
    /// Start over at once with a snapshot (new leader, gap, lag).
    Now,
    /// Start over after this pause.
    After(Duration),
    /// Shutting down.
    Stop,
}

/// Publishes `index` as this node's `collection` until `shutdown` is cancelled.
pub async fn run(
    index: IndexHandle,
    collection: Collection,
    net: NetworkClient,
    local: LeaderHandle,
    shutdown: CancellationToken,
) {
    let mut publisher = Publisher {
        index,
        collection,
        leader: net.leader_watch(),
        net,
        local,
        session: 0,
        unserved: None,
    };
    loop {
        let restart = tokio::select! {
            _ = shutdown.cancelled() => Restart::Stop,
            restart = publisher.sync_round() => restart,
        };
        match restart {
            Restart::Stop => return,
            Restart::Now => {}
            Restart::After(pause) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

struct Publisher {
    index: IndexHandle,
    collection: Collection,
    net: NetworkClient,
    local: LeaderHandle,
    leader: watch::Receiver<LeaderView>,
    session: u64,
    /// The leader and since when (the sending of the first push it did not serve) it has
    /// served none of ours.
    unserved: Option<(PeerId, tokio::time::Instant)>,
}

impl Publisher {
    /// One round: wait for a leader, send it a snapshot, then deltas until something breaks.
    async fn sync_round(&mut self) -> Restart {
        let target = match self.leader.wait_for(|v| v.leader.is_some()).await {
            Ok(view) => view.leader.expect("bug: waited for a leader"),
            Err(_) => return Restart::Stop,
        };
        self.leader.mark_unchanged();
        let mut deltas = self.index.subscribe();
        let (version, entries) = match self.index.snapshot().await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the index to publish it");
                return Restart::After(RETRY);
            }
        };
        let entries = wire_entries(entries);
        let count = entries.len();
        self.session = self.session.wrapping_add(1);
        for page in index_sync::paginate(self.collection, entries, self.session, version) {
            if self.leader_changed(target) {
                return Restart::Now;
            }
            if let Err(restart) = self.send(target, Request::Snapshot(page)).await {
                return restart;
            }
        }
        tracing::debug!(leader = %target, collection = ?self.collection, version, entries = count, "index sent to the leader");

        let mut known = version;
        let mut check = tokio::time::interval(CHECK_INTERVAL);
        check.reset();
        loop {
            tokio::select! {
                changed = self.leader.changed() => {
                    if changed.is_err() {
                        return Restart::Stop;
                    }
                    if self.leader.borrow_and_update().leader != Some(target) {
                        return Restart::Now;
                    }
                }
                received = deltas.recv() => {
                    let first = match received {
                        Ok(delta) => delta,
                        Err(broadcast::error::RecvError::Lagged(_)) => return Restart::Now,
                        Err(broadcast::error::RecvError::Closed) => return Restart::Stop,
                    };
                    let mut batch = vec![first];
                    loop {
                        match deltas.try_recv() {
                            Ok(delta) => batch.push(delta),
                            Err(broadcast::error::TryRecvError::Empty) => break,
                            Err(_) => return Restart::Now,
                        }
                    }
                    let delta = match merge(known, &batch) {
                        Merged::Nothing => continue,
                        Merged::Resync => return Restart::Now,
                        Merged::Delta(delta) => Delta { collection: self.collection, ..delta },
                    };
                    let version = delta.version;
                    if let Err(restart) = self.send(target, Request::Delta(delta)).await {
                        return restart;
                    }
                    known = version;
                }
                _ = check.tick() => {
                    let probe = Delta {
                        collection: self.collection,
                        base: known,
                        version: known,
                        upserted: vec![],
                        removed: vec![],
                    };
                    if let Err(restart) = self.send(target, Request::Delta(probe)).await {
                        return restart;
                    }
                }
            }
        }
    }

    fn leader_changed(&self, target: PeerId) -> bool {
        self.leader.borrow().leader != Some(target)
    }

    /// Sends one request and maps anything but an ack to how to start over.
    async fn send(&mut self, target: PeerId, request: Request) -> Result<(), Restart> {
        if target == self.net.local_peer_id() {
            let response = self.local.index(request).await.ok_or(Restart::Stop)?;
            return Self::outcome(target, response);
        }
        let sent = tokio::time::Instant::now();
        let (outcome, served) = match self.net.sync_index(target, request).await {
            // Served: acknowledged, or any decision about our index.
            Ok(response) => {
                let served = !matches!(response, Response::NotLeader | Response::Busy);
                (Self::outcome(target, response), served)
            }
            Err(crate::net::RequestError::Stopped) => return Err(Restart::Stop),
            Err(e) => {
                tracing::debug!(leader = %target, error = %e, "index push failed");
                (Err(Restart::After(RETRY)), false)
            }
        };
        if served {
            self.unserved = None;
            return outcome;
        }
        let since = match self.unserved {
            Some((leader, since)) if leader == target => since,
            _ => {
                self.unserved = Some((target, sent));
                sent
            }
        };
        if since.elapsed() >= SERVICE_LIMIT {
            self.unserved = None;
            if self.net.depose(target).await.is_err() {
                return Err(Restart::Stop);
            }
        }
        outcome
    }

    /// What the leader's answer means for the round.
    fn outcome(target: PeerId, response: Response) -> Result<(), Restart> {
        match response {
            Response::Ack { .. } => Ok(()),
            Response::NeedSnapshot => {
                tracing::debug!(leader = %target, "the leader asks for a snapshot");
                Err(Restart::Now)
            }
            Response::NotLeader | Response::Busy => Err(Restart::After(RETRY)),
            Response::Refused { reason } => {
                tracing::warn!(leader = %target, %reason, "the leader refused this node's index");
                Err(Restart::After(REFUSED_RETRY))
            }
        }
    }
}

/// Index entries in wire form, leaving out (with a warning) any the protocol cannot carry.
fn wire_entries(entries: Vec<IndexEntry>) -> Vec<index_sync::Entry> {
    entries
        .into_iter()
        .filter(|e| match wire::check_path(&e.path) {
            Ok(()) => true,
            Err(reason) => {
                tracing::warn!(%reason, "not published");
                false
            }
        })
        .map(super::wire_entry)
        .collect()
}

enum Merged {
    /// Every delta was older than what the leader holds.
    Nothing,
    /// A folder switch, a gap or too large a change: send a snapshot instead.
    Resync,
    /// One delta from `known`.
    Delta(Delta),
}

/// Merges consecutive index deltas into one delta from version `known`.
fn merge(known: u64, batch: &[Arc<IndexDelta>]) -> Merged {
    let mut changes: BTreeMap<&str, Option<&IndexEntry>> = BTreeMap::new();
    let mut version = known;
    for delta in batch.iter().filter(|d| d.version > known) {
        if delta.reset || delta.version != version + 1 {
            return Merged::Resync;
        }
        version = delta.version;
        for path in &delta.removed {
            changes.insert(path, None);
        }
        for entry in &delta.upserted {
            changes.insert(&entry.path, Some(entry));
        }
    }
    if version == known {
        return Merged::Nothing;
    }
    if changes.len() > index_sync::MAX_ENTRIES
        || changes
            .keys()
            .map(|p| p.len() + index_sync::ENTRY_OVERHEAD)
            .sum::<usize>()
            > index_sync::PAGE_BUDGET
    {
        return Merged::Resync;
    }
    let mut upserted = Vec::new();
    let mut removed = Vec::new();
    for (path, change) in changes {
        if wire::check_path(path).is_err() {
            continue;
        }
        match change {
            Some(entry) => upserted.push(super::wire_entry(entry.clone())),
            None => removed.push(path.to_string()),
        }
    }
    Merged::Delta(Delta {
        collection: Collection::Shared,
        base: known,
        version,
        upserted,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::share::Kind;

    fn entry(path: &str, byte: u8) -> IndexEntry {
        IndexEntry {
            path: path.into(),
            kind: Kind::File,
            size: 1,
            id: iwant_behaviours::id::Id([byte; 32]),
        }
    }

    fn delta(version: u64, upserted: Vec<IndexEntry>, removed: &[&str]) -> Arc<IndexDelta> {
        Arc::new(IndexDelta {
            version,
            reset: false,
            upserted,
            removed: removed.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn consecutive_deltas_merge_with_the_last_change_winning() {
        let batch = [
            delta(4, vec![entry("a", 1)], &[]),
            delta(5, vec![entry("b", 2)], &["a"]),
            delta(6, vec![entry("a", 3)], &["b"]),
            delta(7, vec![entry("c", 4)], &[]),
        ];
        let Merged::Delta(merged) = merge(4, &batch) else {
            panic!("expected a delta");
        };
        assert_eq!((merged.base, merged.version), (4, 7));
        let paths: Vec<(&str, u8)> = merged
            .upserted
            .iter()
            .map(|e| (e.path.as_str(), e.id.0[0]))
            .collect();
        assert_eq!(paths, [("a", 3), ("c", 4)]);
        assert_eq!(merged.removed, ["b"]);
    }

    #[test]
    fn old_deltas_are_skipped_and_gaps_or_resets_resync() {
        assert!(matches!(
            merge(9, &[delta(8, vec![], &[]), delta(9, vec![], &[])]),
            Merged::Nothing
        ));
        assert!(matches!(merge(3, &[delta(5, vec![], &[])]), Merged::Resync));
        let mut reset = (*delta(4, vec![], &[])).clone();
        reset.reset = true;
        assert!(matches!(merge(3, &[Arc::new(reset)]), Merged::Resync));
        let huge: Vec<IndexEntry> = (0..index_sync::MAX_ENTRIES + 1)
            .map(|i| entry(&format!("f{i}"), 0))
            .collect();
        assert!(matches!(merge(3, &[delta(4, huge, &[])]), Merged::Resync));
    }
}
