//! The partial holders the leader knows: which nodes are downloading which files, and which
//! pieces of each they have verified (`search::Request::Partial`).
//!
//! Soft state, apart from the network index: each node's list replaces its previous one, is
//! dropped when it is not sent again within [`search::PARTIAL_TTL`] or when the node
//! leaves, and everything is forgotten when this node stops leading. Bounded by the protocol
//! (at most [`search::MAX_PARTIAL_FILES`] files of at most [`search::MAX_HAVE`] bytes per node)
//! and by the connected nodes.

use std::{
    collections::{BTreeSet, HashMap},
    time::Instant,
};

use iwant_behaviours::{
    id::Id,
    search::{self, PartialFile, PartialHolder},
    wire::Bytes,
};
use libp2p::PeerId;

/// What one node said it is downloading, and when.
struct Said {
    at: Instant,
    files: Vec<PartialFile>,
}

/// Every node's partial files; see the module docs.
#[derive(Default)]
pub struct Partials {
    by_peer: HashMap<PeerId, Said>,
    /// id → the nodes that said they are downloading it.
    by_id: HashMap<Id, BTreeSet<PeerId>>,
}

impl Partials {
    /// `peer`'s list (checked by `search::Request::check`) replaces what it said before.
    pub fn set(&mut self, peer: PeerId, files: Vec<PartialFile>, now: Instant) {
        self.remove(&peer);
        if files.is_empty() {
            return;
        }
        for f in &files {
            self.by_id.entry(f.id).or_default().insert(peer);
        }
        self.by_peer.insert(peer, Said { at: now, files });
    }

    /// Forgets what `peer` said.
    pub fn remove(&mut self, peer: &PeerId) {
        let Some(said) = self.by_peer.remove(peer) else {
            return;
        };
        for f in said.files {
            if let Some(peers) = self.by_id.get_mut(&f.id) {
                peers.remove(peer);
                if peers.is_empty() {
                    self.by_id.remove(&f.id);
                }
            }
        }
    }

    /// Forgets the lists not sent again within [`search::PARTIAL_TTL`] and those of nodes
    /// for which `keep` is false (they left).
    pub fn expire(&mut self, now: Instant, keep: impl Fn(&PeerId) -> bool) {
        let stale: Vec<PeerId> = self
            .by_peer
            .iter()
            .filter(|(p, s)| !keep(p) || now.duration_since(s.at) >= search::PARTIAL_TTL)
            .map(|(p, _)| *p)
            .collect();
        for peer in stale {
            self.remove(&peer);
        }
    }

    /// The nodes downloading `id` (at most [`search::MAX_PARTIAL_HOLDERS`]), with their pieces.
    pub fn holders_of(&self, id: &Id) -> Vec<PartialHolder> {
        let Some(peers) = self.by_id.get(id) else {
            return Vec::new();
        };
        peers
            .iter()
            .filter_map(|peer| {
                let file = self.by_peer.get(peer)?.files.iter().find(|f| f.id == *id)?;
                Some(PartialHolder {
                    peer: peer.to_string(),
                    have: Bytes(file.have.0.clone()),
                })
            })
            .take(search::MAX_PARTIAL_HOLDERS)
            .collect()
    }

    /// How many nodes said they are downloading something.
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// Whether no node is downloading anything.
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn file(byte: u8, have: &[u8]) -> PartialFile {
        PartialFile {
            id: Id([byte; 32]),
            have: Bytes(have.to_vec()),
        }
    }

    #[test]
    fn a_list_replaces_the_last_one_and_expires_unless_sent_again() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let mut p = Partials::default();
        p.set(a, vec![file(1, &[0b1]), file(2, &[0xff])], t0);
        p.set(b, vec![file(1, &[0b10])], t0);
        let mut held = p.holders_of(&Id([1; 32]));
        held.sort_by(|x, y| x.peer.cmp(&y.peer));
        assert_eq!(held.len(), 2);
        // a's new list no longer names file 2, and has more of file 1.
        p.set(a, vec![file(1, &[0b11])], t0);
        assert!(p.holders_of(&Id([2; 32])).is_empty());
        let of_a = p.holders_of(&Id([1; 32]));
        let of_a = of_a.iter().find(|h| h.peer == a.to_string()).unwrap();
        assert_eq!(of_a.have.0, vec![0b11]);
        // An empty list withdraws; a node that left or went quiet is forgotten.
        p.set(a, vec![], t0);
        assert_eq!(p.holders_of(&Id([1; 32])).len(), 1);
        p.set(a, vec![file(3, &[1])], t0 + Duration::from_secs(5));
        p.expire(t0 + search::PARTIAL_TTL, |_| true);
        assert!(p.holders_of(&Id([1; 32])).is_empty(), "b went quiet");
        assert_eq!(p.len(), 1);
        p.expire(t0 + search::PARTIAL_TTL, |peer| *peer != a);
        assert!(p.is_empty() && p.by_id.is_empty());
    }

    #[test]
    fn an_answer_lists_at_most_the_bound() {
        let mut p = Partials::default();
        let now = Instant::now();
        for _ in 0..search::MAX_PARTIAL_HOLDERS + 5 {
            p.set(PeerId::random(), vec![file(7, &[1])], now);
        }
        assert_eq!(
            p.holders_of(&Id([7; 32])).len(),
            search::MAX_PARTIAL_HOLDERS
        );
    }
}
