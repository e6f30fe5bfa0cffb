//! The shared folder: scanning, hashing, the watcher, and the index deltas.
//!
//! One thread, the indexer ([`spawn`]), owns the index: it walks the shared folder, hashes what
//! is new or changed (pieces in parallel on a bounded rayon pool), writes the results to the
//! store in batches, keeps directory ids up to date, and publishes every change as an
//! [`IndexDelta`] with a monotonically increasing version. A `notify` watcher feeds it the paths
//! that changed; each is handled once it has been quiet for [`SETTLE`], by re-walking just that
//! path; a cheap stat-only rescan every [`RESCAN_INTERVAL`] catches whatever the watcher missed.
//! Unchanged files (path, size, mtime, inode) are never read again; a file seen before under
//! any root with the same inode, size and mtime reuses its hashes.
//!
//! - [`pieces`]: how files are cut into verifiable pieces (the id is the plain BLAKE3 hash).
//! - [`manifest`]: directory manifests and directory ids.
//! - [`scan`]: walking without reading contents. [`hasher`]: hashing one file.

pub mod hasher;
pub mod ignore;
mod indexer;
pub mod manifest;
pub mod partial;
pub mod pieces;
pub mod placed;
pub mod scan;
mod watch;

use std::time::Duration;

pub use indexer::{spawn, IndexHandle};
pub use iwant_behaviours::index_sync::Collection;

pub use iwant_behaviours::id::Id;
pub use manifest::Kind;
use serde::{Deserialize, Serialize};

/// How long a changed path must be quiet before it is indexed.
pub const SETTLE: Duration = Duration::from_millis(250);

/// How often the whole share is re-walked (stat only) to catch missed watcher events.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(60);

/// How many index deltas may wait for a slow subscriber before it must resynchronise.
pub const DELTA_QUEUE: usize = 64;

/// One entry of the index, as it may be shown or sent to other nodes: never an absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Path relative to the shared folder, `/`-separated; "" is the shared folder itself.
    pub path: String,
    /// File or directory.
    pub kind: Kind,
    /// A file's length, or the total length of the files below a directory.
    pub size: u64,
    /// The file's BLAKE3 hash, or the directory's manifest hash (64 hex digits in JSON).
    pub id: Id,
}

impl IndexEntry {
    /// The entry of a stored row; `None` for a directory whose id is not computed yet (every
    /// reader of the index leaves those out).
    pub fn of_row(row: crate::store::EntryRow) -> Option<Self> {
        if row.is_dir && row.id == indexer::PLACEHOLDER_ID {
            return None;
        }
        Some(Self {
            path: row.path,
            kind: if row.is_dir { Kind::Dir } else { Kind::File },
            size: row.size,
            id: Id(row.id),
        })
    }
}

/// A change of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDelta {
    /// The index version after this change; each delta is the previous version + 1.
    pub version: u64,
    /// When true, everything the subscriber knew is void (the shared folder changed) and
    /// `upserted` is the whole new index.
    pub reset: bool,
    /// Entries added or changed.
    pub upserted: Vec<IndexEntry>,
    /// Paths of entries gone.
    pub removed: Vec<String>,
}

/// The indexer's state, for `iwant status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexStatus {
    /// Whether the first scan of the shared folder has finished.
    pub ready: bool,
    /// Indexed files.
    pub files: u64,
    /// Indexed directories, the shared folder included.
    pub dirs: u64,
    /// Total bytes of the indexed files.
    pub bytes: u64,
    /// Entries that could not be indexed (`iwant ls --errors`).
    pub errors: u64,
    /// Entries left out on purpose (`iwant ls --skipped`), counted up to `MAX_SKIPPED_STORED`.
    pub skipped: u64,
    /// The index version (see [`IndexDelta::version`]).
    pub version: u64,
    /// Hashing progress while a scan hashes files; `None` when idle.
    pub hashing: Option<HashingProgress>,
    /// Files hashed since the node started (unchanged files are never hashed again).
    pub hashed_files: u64,
    /// Bytes of file content read for hashing since the node started.
    pub hashed_bytes: u64,
    /// The shared folder does not exist (an unmounted disk, a folder moved away): nothing is
    /// shared until it appears again.
    pub root_missing: bool,
    /// Whether changes are seen as they happen.
    pub watch: WatchState,
}

/// Whether the filesystem watcher sees the shared folder's changes as they happen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WatchState {
    /// Not watching (yet): the first scan runs, or there is no shared folder.
    #[default]
    Off,
    /// Every folder of the share is watched.
    Full,
    /// Some folders cannot be watched (e.g. unreadable); changes there are found by the
    /// periodic rescan only. The rest is watched.
    Partial {
        /// How many folders are not watched.
        unwatched: u64,
    },
    /// No watcher at all: every change waits for the periodic rescan.
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// How the indexer runs.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// What the walk leaves out.
    pub rules: ignore::Rules,
    /// How often the whole share is re-walked; [`RESCAN_INTERVAL`] by default.
    pub rescan_interval: Duration,
    /// Which collection this indexer keeps: the shared folder, or the download folder (whose
    /// rules then say [`ignore::Rules::only_placed`]).
    pub collection: Collection,
    /// The folder every collection's indexer indexes now, shared by them: a switch of one
    /// folder never prunes the other's rows.
    pub live_roots: LiveRoots,
}

/// What this node offers the network: its shared folder and, unless the config turns it off,
/// what it downloaded (the files its downloads placed in the download folder, unchanged).
/// Cheap to clone.
#[derive(Clone)]
pub struct Offered {
    /// The shared folder's index.
    pub shared: IndexHandle,
    /// The download folder's index and the files placed there, if downloads are offered.
    pub downloads: Option<OfferedDownloads>,
}

/// The downloads this node offers.
#[derive(Clone)]
pub struct OfferedDownloads {
    /// The download folder's index (only placed files, [`ignore::Rules::only_placed`]).
    pub index: IndexHandle,
    /// The files placed there.
    pub placed: std::sync::Arc<placed::Placed>,
    /// The downloads in progress: the pieces they have verified.
    pub partial: partial::Partials,
}

impl OfferedDownloads {
    /// The download folder is now `dir`: it offers what downloads placed there before (none,
    /// unless it was the download folder once), and its indexer moves there.
    pub async fn move_to(&self, dir: &std::path::Path) -> Result<(), crate::store::StoreError> {
        self.placed
            .replace(placed::stored(self.index.db(), dir).await?);
        self.index.set_root(dir.to_path_buf()).await;
        Ok(())
    }
}

impl Offered {
    /// The index of `collection`, if it is offered.
    pub fn index(&self, collection: Collection) -> Option<&IndexHandle> {
        match collection {
            Collection::Shared => Some(&self.shared),
            Collection::Downloads => self.downloads.as_ref().map(|d| &d.index),
        }
    }

    /// Every offered collection and its index, the shared folder first.
    pub fn indexes(&self) -> impl Iterator<Item = (Collection, &IndexHandle)> {
        Collection::ALL
            .into_iter()
            .filter_map(|c| self.index(c).map(|i| (c, i)))
    }

    /// The database the indexes live in.
    pub fn db(&self) -> &crate::store::Db {
        self.shared.db()
    }
}

/// The folder each collection's indexer indexes now (store keys), by [`Collection::index`].
pub type LiveRoots = std::sync::Arc<std::sync::Mutex<[Option<String>; 2]>>;

/// The store's rows, as a directory's manifest is built from them.
impl manifest::IndexRow for crate::store::EntryRow {
    fn path(&self) -> &str {
        &self.path
    }

    fn is_dir(&self) -> bool {
        self.is_dir
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn id(&self) -> Id {
        Id(self.id)
    }
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            rules: ignore::Rules::default(),
            rescan_interval: RESCAN_INTERVAL,
            collection: Collection::Shared,
            live_roots: LiveRoots::default(),
        }
    }
}

/// How far a scan's hashing has got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashingProgress {
    /// Files hashed so far in this scan.
    pub files_done: u64,
    /// Files this scan hashes.
    pub files_total: u64,
    /// Bytes hashed so far.
    pub bytes_done: u64,
    /// Bytes this scan hashes.
    pub bytes_total: u64,
}
