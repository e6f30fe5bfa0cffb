//! The arena of records: the records and their masks, peer slots, and the tables that find a
//! peer's path and an id's holders; storing, replacing and removing one record.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use libp2p::PeerId;

use super::{
    rank::{self, DIR_BIT, LIVE_BIT},
    Collection, Entry, Kind, NetworkIndex, NONE,
};

/// One stored entry. A free arena slot has `peer == NONE` and an empty `text`.
pub(super) struct Record {
    /// The path, followed by its lowercase form when that differs.
    pub(super) text: Box<str>,
    pub(super) id: [u8; 32],
    pub(super) size: u64,
    pub(super) path_len: u32,
    /// Where the name starts in the path, and in its lowercase form.
    pub(super) name_start: u32,
    pub(super) lname_start: u32,
    /// Peer slot.
    pub(super) peer: u32,
    /// Neighbours among the records of the same id and peer.
    pub(super) prev: u32,
    pub(super) next: u32,
    /// The peer's snapshot generation of the record's collection when last upserted.
    pub(super) gen: u32,
    pub(super) kind: Kind,
    /// Which of the peer's collections the record is in.
    pub(super) coll: Collection,
}

impl Record {
    pub(super) fn free() -> Record {
        Record {
            text: Box::default(),
            id: [0; 32],
            size: 0,
            path_len: 0,
            name_start: 0,
            lname_start: 0,
            peer: NONE,
            prev: NONE,
            next: NONE,
            gen: 0,
            kind: Kind::File,
            coll: Collection::Shared,
        }
    }

    pub(super) fn path(&self) -> &str {
        &self.text[..self.path_len as usize]
    }

    pub(super) fn lower(&self) -> &str {
        if self.text.len() > self.path_len as usize {
            &self.text[self.path_len as usize..]
        } else {
            &self.text
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.path()[self.name_start as usize..]
    }

    pub(super) fn has_name(&self) -> bool {
        self.name_start < self.path_len
    }
}

/// The masks of one arena slot, apart from the records so scans stay in cache.
#[derive(Clone, Copy)]
pub(super) struct Masks {
    /// Characters of the lowercase name, plus [`DIR_BIT`].
    pub(super) name: u64,
    /// Characters of the lowercase path, plus [`LIVE_BIT`].
    pub(super) path: u64,
    /// Adjacent byte pairs of the lowercase name (a 64-bit Bloom filter): a word can only be a
    /// substring of the name if the name has all its pairs.
    pub(super) pairs: u64,
}

impl Masks {
    pub(super) const FREE: Masks = Masks {
        name: 0,
        path: 0,
        pairs: 0,
    };
}

/// An id's holders: a representative record (whose id is the key) and the number of distinct
/// peers holding it.
pub(super) struct IdEntry {
    pub(super) rep: u32,
    pub(super) holders: u32,
}

pub(super) struct PeerSlot {
    pub(super) peer: PeerId,
    /// The peer's records of both collections, hashed by path.
    pub(super) paths: HashTable<u32>,
    /// Per collection: the snapshot generation, and whether a snapshot is open.
    pub(super) gen: [u32; 2],
    pub(super) snapshot: [bool; 2],
}

pub(super) fn hash_path(h: &DefaultHashBuilder, path: &str) -> u64 {
    h.hash_one(path)
}

pub(super) fn hash_id(h: &DefaultHashBuilder, id: &[u8; 32]) -> u64 {
    h.hash_one(id)
}

pub(super) fn hash_id_peer(h: &DefaultHashBuilder, id: &[u8; 32], slot: u32) -> u64 {
    h.hash_one((id, slot))
}

pub(super) fn live(peers: &mut [Option<PeerSlot>], slot: u32) -> &mut PeerSlot {
    peers[slot as usize]
        .as_mut()
        .expect("bug: a record points to a dead peer slot")
}

impl NetworkIndex {
    pub(super) fn peer_slot(&self, slot: u32) -> &PeerSlot {
        self.peers[slot as usize]
            .as_ref()
            .expect("bug: a live slot index points to a dead slot")
    }

    pub(super) fn intern(&mut self, peer: PeerId) -> u32 {
        if let Some(&slot) = self.slot_of.get(&peer) {
            return slot;
        }
        let p = PeerSlot {
            peer,
            paths: HashTable::new(),
            gen: [0; 2],
            snapshot: [false; 2],
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.peers[slot as usize] = Some(p);
                slot
            }
            None => {
                self.peers.push(Some(p));
                (self.peers.len() - 1) as u32
            }
        };
        self.slot_of.insert(peer, slot);
        slot
    }

    /// Frees a peer's slot once it has no entry and no open snapshot.
    pub(super) fn drop_slot_if_idle(&mut self, slot: u32) {
        let p = self.peer_slot(slot);
        if p.paths.is_empty() && !p.snapshot.iter().any(|open| *open) {
            let peer = p.peer;
            self.slot_of.remove(&peer);
            self.peers[slot as usize] = None;
            self.free_slots.push(slot);
        }
    }

    pub(super) fn find_path(&self, slot: u32, coll: Collection, path: &str) -> Option<u32> {
        let records = &self.records;
        self.peer_slot(slot)
            .paths
            .find(hash_path(&self.hasher, path), |&j| {
                let r = &records[j as usize];
                r.coll == coll && r.path() == path
            })
            .copied()
    }

    /// Adds or replaces one entry of collection `coll` of the peer in `slot` (limits already
    /// checked).
    pub(super) fn put(&mut self, slot: u32, coll: Collection, e: Entry) {
        let gen = self.peer_slot(slot).gen[coll.index()];
        let dir = if e.kind == Kind::Dir { DIR_BIT } else { 0 };
        if let Some(i) = self.find_path(slot, coll, &e.path) {
            if self.records[i as usize].id != e.id {
                self.unlink_id(i);
                self.records[i as usize].id = e.id;
                self.link_id(i);
            }
            let r = &mut self.records[i as usize];
            r.size = e.size;
            r.kind = e.kind;
            r.gen = gen;
            let m = &mut self.masks[i as usize];
            m.name = (m.name & !DIR_BIT) | dir;
            return;
        }
        let path_len = e.path.len();
        let name_start = e.path.rfind('/').map_or(0, |s| s + 1);
        let lower = rank::fold(&e.path);
        let lname_start = lower.rfind('/').map_or(0, |s| s + 1);
        let masks = Masks {
            name: rank::mask_of(&lower.as_bytes()[lname_start..]) | dir,
            path: rank::mask_of(lower.as_bytes()) | LIVE_BIT,
            pairs: rank::pairs_of(&lower.as_bytes()[lname_start..]),
        };
        let text = if lower == e.path {
            e.path
        } else {
            let mut t = e.path;
            t.push_str(&lower);
            t
        };
        let record = Record {
            text: text.into_boxed_str(),
            id: e.id,
            size: e.size,
            // Paths come from a node's share and are far below 4 GiB; a longer one would have
            // been refused by the protocol layer's message size limit.
            path_len: path_len as u32,
            name_start: name_start as u32,
            lname_start: lname_start as u32,
            peer: slot,
            prev: NONE,
            next: NONE,
            gen,
            kind: e.kind,
            coll,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.records[i as usize] = record;
                self.masks[i as usize] = masks;
                i
            }
            None => {
                self.records.push(record);
                self.masks.push(masks);
                (self.records.len() - 1) as u32
            }
        };
        let records = &self.records;
        let hasher = &self.hasher;
        live(&mut self.peers, slot).paths.insert_unique(
            hash_path(hasher, records[i as usize].path()),
            i,
            |&j| hash_path(hasher, records[j as usize].path()),
        );
        self.link_id(i);
        self.len += 1;
    }

    pub(super) fn remove_record(&mut self, i: u32) {
        self.unlink_id(i);
        let r = &self.records[i as usize];
        let h = hash_path(&self.hasher, r.path());
        match live(&mut self.peers, r.peer)
            .paths
            .find_entry(h, |&j| j == i)
        {
            Ok(entry) => {
                entry.remove();
            }
            Err(_) => unreachable!("bug: a record missing from its peer's path table"),
        }
        self.records[i as usize] = Record::free();
        self.masks[i as usize] = Masks::FREE;
        self.free.push(i);
        self.len -= 1;
    }

    /// Adds record `i` to its id's holders.
    pub(super) fn link_id(&mut self, i: u32) {
        let (id, peer) = {
            let r = &self.records[i as usize];
            (r.id, r.peer)
        };
        let h = hash_id_peer(&self.hasher, &id, peer);
        let records = &self.records;
        let head = self
            .by_id_peer
            .find(h, |&j| {
                let r = &records[j as usize];
                r.id == id && r.peer == peer
            })
            .copied();
        if let Some(head) = head {
            let after = self.records[head as usize].next;
            self.records[i as usize].prev = head;
            self.records[i as usize].next = after;
            self.records[head as usize].next = i;
            if after != NONE {
                self.records[after as usize].prev = i;
            }
            return;
        }
        let hasher = &self.hasher;
        self.by_id_peer.insert_unique(h, i, |&j| {
            let r = &records[j as usize];
            hash_id_peer(hasher, &r.id, r.peer)
        });
        let h = hash_id(hasher, &id);
        match self.by_id.find_mut(h, |e| records[e.rep as usize].id == id) {
            Some(e) => e.holders += 1,
            None => {
                self.by_id
                    .insert_unique(h, IdEntry { rep: i, holders: 1 }, |e| {
                        hash_id(hasher, &records[e.rep as usize].id)
                    });
            }
        }
    }

    /// Takes record `i` out of its id's holders (its fields stay as they are).
    pub(super) fn unlink_id(&mut self, i: u32) {
        let (id, peer, prev, next) = {
            let r = &self.records[i as usize];
            (r.id, r.peer, r.prev, r.next)
        };
        if prev != NONE {
            self.records[prev as usize].next = next;
            if next != NONE {
                self.records[next as usize].prev = prev;
            }
        } else {
            let h = hash_id_peer(&self.hasher, &id, peer);
            let Ok(mut head) = self.by_id_peer.find_entry(h, |&j| j == i) else {
                unreachable!("bug: the first record of an (id, peer) group is not in the table");
            };
            if next != NONE {
                *head.get_mut() = next;
                self.records[next as usize].prev = NONE;
            } else {
                head.remove();
                let records = &self.records;
                let h = hash_id(&self.hasher, &id);
                let Ok(mut entry) = self
                    .by_id
                    .find_entry(h, |e| records[e.rep as usize].id == id)
                else {
                    unreachable!("bug: a held id is not in the id table");
                };
                entry.get_mut().holders -= 1;
                if entry.get().holders == 0 {
                    entry.remove();
                    self.records[i as usize].prev = NONE;
                    self.records[i as usize].next = NONE;
                    return;
                }
            }
        }
        self.records[i as usize].prev = NONE;
        self.records[i as usize].next = NONE;
        // Another record of the id represents it from now on, if `i` did.
        let records = &self.records;
        let h = hash_id(&self.hasher, &id);
        let Some(entry) = self.by_id.find_mut(h, |e| records[e.rep as usize].id == id) else {
            unreachable!("bug: a held id is not in the id table");
        };
        if entry.rep != i {
            return;
        }
        entry.rep = if prev != NONE {
            prev
        } else if next != NONE {
            next
        } else {
            self.slot_of
                .values()
                .find_map(|&slot| {
                    self.by_id_peer
                        .find(hash_id_peer(&self.hasher, &id, slot), |&j| {
                            let r = &records[j as usize];
                            r.id == id && r.peer == slot
                        })
                        .copied()
                })
                .expect("bug: an id with holders has no (id, peer) group")
        };
    }
}
