//! The downloads in progress this node offers: the pieces of each file that a download has
//! verified and written, served to other downloaders of the same content (swarming), and told
//! to the leader (`search::Request::Partial`) by [`announce`].
//!
//! The download task registers its distinct files once their piece lists are known
//! ([`Partials::register`]), updates what it has each time it saves its bitfield (at most
//! once a second, [`Partials::update`]), and takes them back when it ends
//! ([`Partials::remove`]). The server reads a piece of a partial file only if its bit is set:
//! only verified data is ever served, and the receiver verifies it again against the id.

use std::{
    collections::HashMap,
    ops::Range,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use iwant_behaviours::{id::Id, search};
use tokio_util::sync::CancellationToken;

use super::pieces::Layout;
use crate::{
    leader::{self, LeaderHandle},
    net::NetworkClient,
    transfer::units,
};

/// How often [`announce`] looks for news to tell the leader.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// How often [`announce`] repeats an unchanged list, so the leader keeps it (under
/// [`search::PARTIAL_TTL`]).
pub const REPEAT_EVERY: Duration = Duration::from_secs(4);

/// One file of a download in progress.
#[derive(Debug)]
pub struct PartialFile {
    /// Its content id.
    pub id: Id,
    /// Where its data is written.
    pub path: PathBuf,
    /// How it is cut.
    pub layout: Layout,
    /// Its verified piece list (empty for a one-piece file).
    pub pieces: Vec<u8>,
    /// The download's units that are this file's pieces.
    units: Range<usize>,
    /// The pieces verified and written: bit `i % 8` of byte `i / 8` is piece `i`.
    have: RwLock<Vec<u8>>,
}

impl PartialFile {
    /// A file whose pieces are the download's `units`.
    pub fn new(
        id: Id,
        path: PathBuf,
        layout: Layout,
        pieces: Vec<u8>,
        units: Range<usize>,
    ) -> Self {
        Self {
            id,
            path,
            layout,
            pieces,
            have: RwLock::new(vec![0; units.len().div_ceil(8)]),
            units,
        }
    }

    /// Whether piece `index` is verified and written.
    pub fn has(&self, index: u64) -> bool {
        let have = self.have.read().expect("bug: poisoned");
        usize::try_from(index).is_ok_and(|i| i < self.units.len() && units::bit(&have, i))
    }

    /// The pieces it has, as the wire carries them.
    fn bitfield(&self) -> Vec<u8> {
        self.have.read().expect("bug: poisoned").clone()
    }
}

#[derive(Default)]
struct Inner {
    /// Download id → its files.
    downloads: HashMap<Id, Vec<Arc<PartialFile>>>,
    /// File id → the file served for it (the first download that registered it).
    files: HashMap<Id, Arc<PartialFile>>,
}

/// Every download's partial files; see the module docs. Cloned handles share one registry.
#[derive(Clone, Default)]
pub struct Partials {
    inner: Arc<Mutex<Inner>>,
}

impl Partials {
    /// Download `download`'s files (its earlier ones, if any, are replaced).
    pub fn register(&self, download: Id, files: Vec<PartialFile>) {
        let mut inner = self.inner.lock().expect("bug: poisoned");
        remove(&mut inner, &download);
        let files: Vec<Arc<PartialFile>> = files.into_iter().map(Arc::new).collect();
        for f in &files {
            inner.files.entry(f.id).or_insert_with(|| f.clone());
        }
        inner.downloads.insert(download, files);
    }

    /// Download `download` has verified and written the units of `done` (its bitfield as the
    /// store keeps it: bit `u % 8` of byte `u / 8` is unit `u`).
    pub fn update(&self, download: &Id, done: &[u8]) {
        let inner = self.inner.lock().expect("bug: poisoned");
        let Some(files) = inner.downloads.get(download) else {
            return;
        };
        for f in files {
            let have = units::bitfield(f.units.clone().map(|u| units::bit(done, u)));
            *f.have.write().expect("bug: poisoned") = have;
        }
    }

    /// Download `download` ended: its files are not offered as partial any more.
    pub fn remove(&self, download: &Id) {
        remove(&mut self.inner.lock().expect("bug: poisoned"), download);
    }

    /// The partial file with content `id`, if a download in progress has one.
    pub fn get(&self, id: &Id) -> Option<Arc<PartialFile>> {
        self.inner
            .lock()
            .expect("bug: poisoned")
            .files
            .get(id)
            .cloned()
    }

    /// What to tell the leader: the files with at least one piece, at most
    /// [`search::MAX_PARTIAL_FILES`], files still missing pieces first (complete files of a
    /// folder in progress are useful, but less rare).
    pub fn list(&self) -> Vec<search::PartialFile> {
        let inner = self.inner.lock().expect("bug: poisoned");
        let mut files: Vec<(bool, search::PartialFile)> = inner
            .files
            .values()
            .filter_map(|f| {
                let have = f.bitfield();
                let count: u32 = have.iter().map(|b| b.count_ones()).sum();
                (count > 0).then(|| {
                    let complete = count as usize == f.units.len();
                    let have = search::PartialFile {
                        id: f.id,
                        have: have.into(),
                    };
                    (complete, have)
                })
            })
            .collect();
        files.sort_by_key(|(complete, f)| (*complete, f.id));
        files
            .into_iter()
            .take(search::MAX_PARTIAL_FILES)
            .map(|(_, f)| f)
            .collect()
    }
}

/// Takes `download`'s files out of `inner`.
fn remove(inner: &mut Inner, download: &Id) {
    let Some(files) = inner.downloads.remove(download) else {
        return;
    };
    for f in files {
        if inner.files.get(&f.id).is_some_and(|g| Arc::ptr_eq(g, &f)) {
            inner.files.remove(&f.id);
            // Another download of the same content takes over.
            let other = inner
                .downloads
                .values()
                .flatten()
                .find(|g| g.id == f.id)
                .cloned();
            if let Some(g) = other {
                inner.files.insert(f.id, g);
            }
        }
    }
}

/// Tells the leader what `partials` has, while the node runs: within [`ANNOUNCE_EVERY`] of a
/// change (an empty list once, when the last download ends), to every new leader, and every
/// [`REPEAT_EVERY`] while the list is not empty.
pub async fn announce(
    partials: Partials,
    net: NetworkClient,
    leader: LeaderHandle,
    shutdown: CancellationToken,
) {
    let mut leaders = net.leader_watch();
    let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What the leader was told last, and when.
    let mut told: (Vec<search::PartialFile>, Option<tokio::time::Instant>) = (Vec::new(), None);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let new_leader = leaders.has_changed().unwrap_or(false);
        leaders.mark_unchanged();
        let files = partials.list();
        let due = files != told.0
            || (!files.is_empty()
                && (new_leader || told.1.is_none_or(|at| at.elapsed() >= REPEAT_EVERY)));
        if !due {
            continue;
        }
        match leader::ask::partial(&net, &leader, files.clone(), ANNOUNCE_EVERY * 3).await {
            Ok(()) => told = (files, Some(tokio::time::Instant::now())),
            Err(e) => tracing::debug!(error = %e, "cannot tell the leader what downloads have"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(byte: u8, units: Range<usize>) -> PartialFile {
        let layout = Layout::for_len(units.len() as u64 * super::super::pieces::MIN_PIECE);
        PartialFile::new(
            Id([byte; 32]),
            PathBuf::from("p"),
            layout,
            Vec::new(),
            units,
        )
    }

    #[test]
    fn a_download_s_bitfield_is_cut_into_its_files_and_listed() {
        let p = Partials::default();
        let d = Id([9; 32]);
        p.register(d, vec![file(1, 0..3), file(2, 3..12)]);
        assert!(p.list().is_empty(), "nothing verified yet");
        // Units 0, 1, 2 (all of file 1) and 4 (piece 1 of file 2).
        p.update(&d, &[0b0001_0111]);
        let one = p.get(&Id([1; 32])).unwrap();
        assert!(one.has(0) && one.has(2) && !one.has(3));
        let two = p.get(&Id([2; 32])).unwrap();
        assert!(!two.has(0) && two.has(1) && !two.has(8) && !two.has(u64::MAX));
        let listed = p.list();
        // The incomplete file first.
        assert_eq!(listed[0].id, Id([2; 32]));
        assert_eq!(listed[0].have.0, vec![0b10, 0]);
        assert_eq!(listed[1].have.0, vec![0b111]);
        p.remove(&d);
        assert!(p.get(&Id([1; 32])).is_none() && p.list().is_empty());
    }

    #[test]
    fn a_second_download_of_a_file_takes_over_when_the_first_ends() {
        let p = Partials::default();
        let (d1, d2) = (Id([1; 32]), Id([2; 32]));
        p.register(d1, vec![file(5, 0..1)]);
        p.register(d2, vec![file(5, 2..3)]);
        p.update(&d2, &[0b100]);
        assert!(!p.get(&Id([5; 32])).unwrap().has(0), "the first one serves");
        p.remove(&d1);
        assert!(
            p.get(&Id([5; 32])).unwrap().has(0),
            "the second one took over"
        );
    }
}
