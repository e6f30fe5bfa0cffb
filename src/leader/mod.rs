//! Everything about the leader: being it, feeding it, asking it.
//!
//! - [`index`]: the leader's in-memory index of every node's entries, and ranked search over it.
//! - [`service`]: the task that, while this node leads, takes index pushes and searches from
//!   every node (this one included) and answers them. Followers keep nothing but their own
//!   index.
//! - [`publish`]: the task that pushes this node's index to whichever node leads: a paged
//!   snapshot to every new leader, then deltas.
//! - [`ask`]: sends a search to the leader, waiting a bounded time for one to be elected.
//! - [`partial`]: the nodes downloading files and the pieces they have (swarming), which the
//!   leader keeps next to the index and lists with the holders.
//!
//! The wire protocols are `iwant_behaviours::index_sync` and `iwant_behaviours::search`.

pub mod ask;
pub mod index;
pub mod partial;
pub mod publish;
pub mod service;

pub use service::{spawn, LeaderHandle};

use crate::share::IndexEntry;

/// The wire form of an index entry.
pub fn wire_entry(entry: IndexEntry) -> iwant_behaviours::index_sync::Entry {
    iwant_behaviours::index_sync::Entry {
        path: entry.path,
        kind: entry.kind,
        size: entry.size,
        id: entry.id,
    }
}

/// An entry from the wire, for the leader's index.
fn index_entry(entry: iwant_behaviours::index_sync::Entry) -> index::Entry {
    index::Entry {
        path: entry.path,
        kind: entry.kind,
        size: entry.size,
        id: entry.id.0,
    }
}
