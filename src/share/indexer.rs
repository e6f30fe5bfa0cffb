//! The indexer thread: the one owner of the index.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use notify::{event::AccessKind, event::AccessMode, EventKind};
use rayon::prelude::*;
use tokio::sync::broadcast;

use super::{
    hasher, manifest, scan, Collection, HashingProgress, IndexDelta, IndexEntry, IndexOptions,
    IndexStatus, Kind, WatchState, DELTA_QUEUE, SETTLE,
};
use iwant_behaviours::id::Id;

use crate::store::{
    Db, DirRow, EntryRow, FileRow, FileStat, IndexChange, Pooled, ScanError, Store, StoreError,
};

/// Filesystem events that may wait for the indexer; beyond, the next step is a full rescan.
pub const EVENT_QUEUE: usize = 4096;

/// Most files hashed between two commits (so progress and `ls` move during a long scan).
const BATCH_FILES: usize = 512;

/// Most bytes hashed between two commits.
const BATCH_BYTES: u64 = 256 * 1024 * 1024;

/// The longest the thread sleeps before checking its flags again.
const MAX_IDLE: Duration = Duration::from_millis(250);

/// How often a missing shared folder is looked for.
const MISSING_POLL: Duration = Duration::from_secs(1);

/// The id a new directory row has until `update_dir_ids` computes it (a real BLAKE3 hash is
/// never all zeros in practice); readers leave such rows out.
pub(super) const PLACEHOLDER_ID: [u8; 32] = [0; 32];

/// The `meta` key of a collection's index version.
fn version_key(collection: Collection) -> &'static str {
    match collection {
        Collection::Shared => "index_version",
        Collection::Downloads => "downloads_index_version",
    }
}

enum Msg {
    /// Paths the watcher reported (absolute).
    Fs(Vec<PathBuf>),
    /// Share another folder.
    SetRoot(PathBuf),
}

struct Shared {
    /// The collection indexed.
    collection: Collection,
    status: Mutex<IndexStatus>,
    root: Mutex<PathBuf>,
    /// The watcher lost events: rescan everything.
    overflow: AtomicBool,
    stop: AtomicBool,
    /// Folder switches sent and not yet taken up: the work in progress is for a folder that
    /// is no longer shared, so it stops at once.
    switching: AtomicUsize,
    /// Nothing may be published: the shared folder is missing, or a new shared folder's
    /// first scan runs (the old folder's entries are gone, the new ones not yet known).
    hidden: AtomicBool,
}

impl Shared {
    /// Whether the work in progress should stop: the node stops or the folder changes.
    fn interrupted(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.switching.load(Ordering::Relaxed) > 0
    }
}

/// A handle to the indexer thread. Cheap to clone.
#[derive(Clone)]
pub struct IndexHandle {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    deltas: broadcast::Sender<Arc<IndexDelta>>,
    db: Db,
}

impl IndexHandle {
    /// The indexer's current state.
    pub fn status(&self) -> IndexStatus {
        self.shared.status.lock().expect("bug: poisoned").clone()
    }

    /// The shared folder being indexed.
    pub fn root(&self) -> PathBuf {
        self.shared.root.lock().expect("bug: poisoned").clone()
    }

    /// Every future change of the index. A subscriber that falls [`DELTA_QUEUE`] deltas behind
    /// gets `Lagged` and must start over from [`IndexHandle::entries`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<IndexDelta>> {
        self.deltas.subscribe()
    }

    /// Switches to another shared folder; returns at once, the indexer catches up.
    /// The scan of the old folder stops at once, and its entries are withdrawn from the
    /// network (an empty index is published) before the new folder is scanned.
    pub async fn set_root(&self, root: PathBuf) {
        // Counted before it is queued, so the indexer gives up on the old folder now rather
        // than when it reaches the message.
        self.shared.switching.fetch_add(1, Ordering::Relaxed);
        let tx = self.tx.clone();
        // The queue may be full of watcher events: wait on a blocking thread, not here.
        let sent = tokio::task::spawn_blocking(move || tx.send(Msg::SetRoot(root))).await;
        if !matches!(sent, Ok(Ok(()))) {
            self.shared.switching.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Every indexed entry (files and directories, the shared folder as ""), sorted by path.
    /// Nothing while the shared folder is missing.
    pub async fn entries(&self) -> Result<Vec<IndexEntry>, StoreError> {
        if self.status().root_missing {
            return Ok(Vec::new());
        }
        let (db, root) = (self.db.clone(), self.root());
        tokio::task::spawn_blocking(move || all_entries(&*db.get()?, &root_key(&root)))
            .await
            .expect("bug: index query panicked")
    }

    /// The index version and every entry, consistent with [`IndexHandle::subscribe`]: a
    /// subscriber that subscribed before calling this and applies, on top of the entries,
    /// every delta with a higher version than the one returned, holds the index. (The
    /// entries may already include some of those deltas; applying them again changes nothing.)
    /// While nothing may be published (the shared folder is missing, or a new one's first
    /// scan runs) the entries are empty.
    pub async fn snapshot(&self) -> Result<(u64, Vec<IndexEntry>), StoreError> {
        let (db, root) = (self.db.clone(), self.root());
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let store = db.get()?;
            // The indexer writes a change, then its version, then publishes it: reading the
            // version first means the entries hold at least that version.
            let version = stored_version(&store, shared.collection)?;
            if shared.hidden.load(Ordering::Acquire) {
                return Ok((version, Vec::new()));
            }
            Ok((version, all_entries(&store, &root_key(&root))?))
        })
        .await
        .expect("bug: index query panicked")
    }

    /// The entries left out on purpose (hidden, secrets, ignore rules, the node's home), sorted
    /// by path, at most `limit`.
    pub async fn skipped(&self, limit: u64) -> Result<Vec<ScanError>, StoreError> {
        let (db, root) = (self.db.clone(), self.root());
        tokio::task::spawn_blocking(move || db.get()?.skipped(&root_key(&root), limit))
            .await
            .expect("bug: index query panicked")
    }

    /// The entries that could not be indexed, sorted by path.
    pub async fn errors(&self) -> Result<Vec<ScanError>, StoreError> {
        let (db, root) = (self.db.clone(), self.root());
        tokio::task::spawn_blocking(move || db.get()?.scan_errors(&root_key(&root)))
            .await
            .expect("bug: index query panicked")
    }

    /// The database the index lives in (readers take a connection with [`Db::get`]; WAL lets
    /// them read while the indexer writes).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The store key of the current shared folder (rows of the index are keyed by it).
    pub fn root_key(&self) -> String {
        root_key(&self.root())
    }

    /// Tells the indexer that the file at `path` (absolute) may have changed, e.g. because a
    /// peer asked for it and it no longer matches its index row. Never waits: when the
    /// indexer's queue is full the next rescan catches it.
    pub fn recheck(&self, path: PathBuf) {
        let _ = self.tx.try_send(Msg::Fs(vec![path]));
    }

    /// Asks the thread to stop: a walk stops before its next entry, hashing before its next
    /// read of at most a MiB, and the batch is not committed.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// The index version of `collection` last written to the store.
fn stored_version(store: &Store, collection: Collection) -> Result<u64, StoreError> {
    Ok(store
        .meta(version_key(collection))?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Whether `path` is, or lies inside, a download's partial file or folder
/// (`.<name>.<id>.iwant-part`).
fn in_partial_download(path: &Path) -> bool {
    path.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|name| name.starts_with('.') && name.ends_with(scan::PARTIAL_SUFFIX))
    })
}

/// A file of the download folder whose content is no longer what this node downloaded: out of
/// the index (the caller tells the network), listed as skipped.
fn drop_changed(path: String, change: &mut IndexChange) {
    tracing::info!(path, "a downloaded file changed; no longer offered");
    change.remove_files.push(path.clone());
    change.skipped.push(ScanError {
        path,
        reason: super::placed::CHANGED.into(),
    });
}

/// The store key of a share root.
fn root_key(root: &Path) -> String {
    root.to_string_lossy().into_owned()
}

/// Opens the database at `db` and starts indexing `root` (an existing, canonical directory)
/// on a thread of its own. The thread ends after [`IndexHandle::stop`].
pub fn spawn(
    db: Db,
    root: PathBuf,
    options: IndexOptions,
) -> Result<(IndexHandle, std::thread::JoinHandle<()>), StoreError> {
    let store = db.get()?;
    let collection = options.collection;
    let version = stored_version(&store, collection)?;
    options.live_roots.lock().expect("bug: poisoned")[collection.index()] = Some(root_key(&root));
    let (tx, rx) = mpsc::sync_channel(EVENT_QUEUE);
    let (deltas, _) = broadcast::channel(DELTA_QUEUE);
    let shared = Arc::new(Shared {
        collection,
        status: Mutex::new(IndexStatus {
            version,
            ..Default::default()
        }),
        root: Mutex::new(root.clone()),
        overflow: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        switching: AtomicUsize::new(0),
        hidden: AtomicBool::new(false),
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("iwant-hash-{i}"))
        .build()
        .map_err(|e| StoreError::Sqlite {
            path: db.path().to_path_buf(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
    let handle = IndexHandle {
        tx: tx.clone(),
        shared: shared.clone(),
        deltas: deltas.clone(),
        db,
    };
    let indexer = Indexer {
        store,
        key: root_key(&root),
        root,
        version,
        shared,
        deltas,
        pool: Arc::new(pool),
        tx,
        watcher: None,
        pending: HashMap::new(),
        rules: options.rules,
        rescan_interval: options.rescan_interval,
        missing: false,
        live_roots: options.live_roots,
    };
    let thread = std::thread::Builder::new()
        .name(match collection {
            Collection::Shared => "iwant-index".into(),
            Collection::Downloads => "iwant-index-dl".into(),
        })
        .spawn(move || indexer.run(rx))
        .expect("cannot start the indexer thread");
    Ok((handle, thread))
}

struct Indexer {
    store: Pooled,
    root: PathBuf,
    key: String,
    version: u64,
    shared: Arc<Shared>,
    deltas: broadcast::Sender<Arc<IndexDelta>>,
    pool: Arc<rayon::ThreadPool>,
    tx: SyncSender<Msg>,
    watcher: Option<super::watch::FolderWatcher>,
    /// Relative paths reported changed, with when they last were.
    pending: HashMap<String, Instant>,
    /// What the walk leaves out.
    rules: super::ignore::Rules,
    /// How often the whole share is re-walked.
    rescan_interval: Duration,
    /// The shared folder does not exist: nothing is indexed or published until it does.
    missing: bool,
    /// Every collection's current root (this one's kept up to date here).
    live_roots: super::LiveRoots,
}

/// The outcome of one reconcile, before directory ids.
struct Delta {
    upserted: Vec<IndexEntry>,
    removed: Vec<String>,
}

impl Indexer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        self.full_scan(false);
        let mut last_rescan = Instant::now();
        while !self.stopping() {
            if self.missing {
                match rx.recv_timeout(MISSING_POLL) {
                    Ok(Msg::SetRoot(root)) => {
                        self.shared.switching.fetch_sub(1, Ordering::Relaxed);
                        self.switch_root(root);
                        last_rescan = Instant::now();
                    }
                    // Nothing to index until the folder is back.
                    Ok(Msg::Fs(_)) | Err(RecvTimeoutError::Timeout) => {
                        if self.root_present() {
                            tracing::info!(root = %self.root.display(), "the shared folder is back; sharing it");
                            self.full_scan(true);
                            last_rescan = Instant::now();
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                continue;
            }
            let next_settle = self.pending.values().min().map(|t| *t + SETTLE);
            let wake = next_settle
                .unwrap_or_else(|| last_rescan + self.rescan_interval)
                .min(last_rescan + self.rescan_interval);
            let wait = wake.saturating_duration_since(Instant::now()).min(MAX_IDLE);
            match rx.recv_timeout(wait) {
                Ok(Msg::Fs(paths)) => {
                    let now = Instant::now();
                    for p in paths {
                        if let Some(rel) = self.rel_of(&p) {
                            self.pending.insert(rel, now);
                        }
                    }
                    // Fall through: paths that have settled are indexed even while other
                    // paths keep changing.
                }
                Ok(Msg::SetRoot(root)) => {
                    self.shared.switching.fetch_sub(1, Ordering::Relaxed);
                    self.switch_root(root);
                    last_rescan = Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.shared.overflow.swap(false, Ordering::Relaxed) {
                tracing::info!("the watcher lost events; rescanning the shared folder");
                self.pending.clear();
                self.reconcile_logged("", false);
                last_rescan = Instant::now();
                continue;
            }
            let now = Instant::now();
            let ready: Vec<String> = self
                .pending
                .iter()
                .filter(|(_, t)| now.duration_since(**t) >= SETTLE)
                .map(|(p, _)| p.clone())
                .collect();
            if !ready.is_empty() {
                for rel in &ready {
                    self.pending.remove(rel);
                }
                // A changed `.iwantignore` changes what its whole folder shares.
                let ready = ready.into_iter().map(|rel| match rel.rsplit_once('/') {
                    Some((dir, super::ignore::IGNORE_FILE)) => dir.to_string(),
                    None if rel == super::ignore::IGNORE_FILE => String::new(),
                    _ => rel,
                });
                for rel in outermost(ready.collect()) {
                    self.reconcile_logged(&rel, false);
                }
            }
            if last_rescan.elapsed() >= self.rescan_interval {
                self.reconcile_logged("", false);
                last_rescan = Instant::now();
            }
        }
        tracing::debug!("indexer stopped");
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// Whether the work in progress should be dropped (the node stops, the folder changes).
    fn interrupted(&self) -> bool {
        self.shared.interrupted()
    }

    /// Whether the shared folder exists (as a directory).
    fn root_present(&self) -> bool {
        std::fs::metadata(&self.root).is_ok_and(|m| m.is_dir())
    }

    /// The shared folder is gone: withdraw its entries from the network (the rows stay, so
    /// nothing is hashed again when it comes back) and wait for it.
    fn root_gone(&mut self) {
        if !self.missing {
            tracing::warn!(root = %self.root.display(), "the shared folder does not exist (an unmounted disk? moved away?); nothing is shared until it exists again");
        }
        self.missing = true;
        self.unwatch();
        self.pending.clear();
        self.shared.hidden.store(true, Ordering::Release);
        {
            let mut status = self.shared.status.lock().expect("bug: poisoned");
            status.root_missing = true;
            status.ready = true;
        }
        self.withdraw();
    }

    /// Publishes an empty index (a reset), so that subscribers forget every entry now.
    fn withdraw(&mut self) {
        if let Err(e) = self.send(true, Vec::new(), Vec::new()) {
            tracing::warn!(error = %e, "cannot withdraw the index");
        }
    }

    /// Starts watching the root (see [`super::watch`]); `dirs` and `unlisted` come from a
    /// walk of the whole share. Failures are logged, shown in the status, and the periodic
    /// rescan carries on.
    fn watch(&mut self, dirs: &[String], unlisted: &[String]) {
        let tx = self.tx.clone();
        let shared = self.shared.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let event = match res {
                Ok(e) => e,
                Err(_) => {
                    shared.overflow.store(true, Ordering::Relaxed);
                    return;
                }
            };
            if event.need_rescan() {
                shared.overflow.store(true, Ordering::Relaxed);
                return;
            }
            // Reads (our own hashing among them) change nothing.
            if let EventKind::Access(kind) = event.kind {
                if kind != AccessKind::Close(AccessMode::Write) {
                    return;
                }
            }
            // Downloads in progress write their partial files piece by piece: never indexed,
            // and not worth a queue slot each.
            if event.paths.iter().all(|p| in_partial_download(p)) {
                return;
            }
            match tx.try_send(Msg::Fs(event.paths)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => shared.overflow.store(true, Ordering::Relaxed),
                Err(TrySendError::Disconnected(_)) => {}
            }
        };
        self.unwatch();
        match super::watch::FolderWatcher::start(&self.root, dirs, unlisted, handler) {
            Ok(w) => self.watcher = Some(w),
            Err(reason) => {
                tracing::warn!(root = %self.root.display(), %reason, "changes are picked up by the periodic rescan only");
                self.shared.status.lock().expect("bug: poisoned").watch =
                    WatchState::Unavailable { reason };
                return;
            }
        }
        self.refresh_watch_state();
    }

    /// Stops watching.
    fn unwatch(&mut self) {
        self.watcher = None;
        self.shared.status.lock().expect("bug: poisoned").watch = WatchState::Off;
    }

    fn refresh_watch_state(&self) {
        if let Some(w) = &self.watcher {
            self.shared.status.lock().expect("bug: poisoned").watch = w.state();
        }
    }

    /// The relative path of a watcher path; non-UTF-8 names map to their nearest UTF-8
    /// ancestor. `None` outside the root.
    fn rel_of(&self, abs: &Path) -> Option<String> {
        let mut rel = abs.strip_prefix(&self.root).ok()?;
        loop {
            if let Some(s) = scan::rel_string(rel) {
                return Some(s);
            }
            rel = rel.parent()?;
        }
    }

    fn switch_root(&mut self, root: PathBuf) {
        if root == self.root {
            // The same folder again: finish its first scan if the switch interrupted it.
            if !self.shared.status.lock().expect("bug: poisoned").ready {
                let reset = self.shared.hidden.load(Ordering::Acquire);
                self.full_scan(reset);
            }
            return;
        }
        tracing::info!(from = %self.root.display(), to = %root.display(), "switching the shared folder");
        let old = std::mem::replace(&mut self.key, root_key(&root));
        let other = {
            let mut live = self.live_roots.lock().expect("bug: poisoned");
            live[self.shared.collection.index()] = Some(self.key.clone());
            live.iter().flatten().cloned().collect::<Vec<String>>()
        };
        let mut keep: Vec<&str> = vec![&old, &self.key];
        keep.extend(other.iter().map(String::as_str));
        if let Err(e) = self.store.forget_other_roots(&keep) {
            tracing::warn!(error = %e, "cannot prune the old index");
        }
        self.root = root.clone();
        *self.shared.root.lock().expect("bug: poisoned") = root;
        self.pending.clear();
        self.unwatch();
        // The old folder's entries leave the network now, not after the new scan.
        self.shared.hidden.store(true, Ordering::Release);
        self.withdraw();
        self.full_scan(true);
    }

    fn set_ready(&self, ready: bool) {
        self.shared.status.lock().expect("bug: poisoned").ready = ready;
    }

    /// Indexes the whole share: a first pass without the watcher (inotify reports every open,
    /// which would slow hashing down), then the watcher, then a catch-up walk that re-indexes
    /// whatever changed during the first pass. `ready` is set at the end.
    /// Nothing is published while it runs after a switch (`reset`): the old folder's entries
    /// are gone, and the new ones are published once complete.
    fn full_scan(&mut self, reset: bool) {
        self.unwatch();
        if !self.root_present() {
            self.root_gone();
            return;
        }
        if self.missing {
            self.missing = false;
            self.shared
                .status
                .lock()
                .expect("bug: poisoned")
                .root_missing = false;
        }
        self.set_ready(false);
        let walk = self.walk("");
        if walk.interrupted {
            return;
        }
        let mut files: HashMap<String, scan::Stamp> = walk
            .files
            .iter()
            .map(|f| (f.path.clone(), f.stamp))
            .collect();
        let mut dirs: HashSet<String> = walk.dirs.iter().cloned().collect();
        let (all_dirs, unlisted) = (walk.dirs.clone(), walk.unlisted.clone());
        self.reconcile_walk_logged("", walk, reset);
        if self.interrupted() {
            return;
        }
        self.shared.hidden.store(false, Ordering::Release);
        self.watch(&all_dirs, &unlisted);
        let again = self.walk("");
        if again.interrupted {
            return;
        }
        let mut changed = Vec::new();
        for f in again.files {
            if files.remove(&f.path) != Some(f.stamp) {
                changed.push(f.path);
            }
        }
        for d in again.dirs {
            if !dirs.remove(&d) {
                changed.push(d);
            }
        }
        changed.extend(files.into_keys().chain(dirs));
        for rel in outermost(changed) {
            self.reconcile_logged(&rel, false);
        }
        self.set_ready(true);
    }

    fn reconcile_logged(&mut self, rel: &str, reset: bool) {
        // A walk of a vanished root would look like a folder emptied: every row deleted.
        if !self.root_present() {
            self.root_gone();
            return;
        }
        let walk = self.walk(rel);
        if walk.interrupted {
            return;
        }
        self.reconcile_walk_logged(rel, walk, reset);
    }

    /// Walks `rel`, giving up when interrupted. A root that vanished during the walk makes
    /// it interrupted too (what it saw is not the folder's contents), and the root gone.
    fn walk(&mut self, rel: &str) -> scan::Walk {
        let shared = self.shared.clone();
        let mut walk =
            scan::walk_until(&self.root, rel, &self.rules, &move || shared.interrupted());
        if !walk.interrupted && !self.root_present() {
            self.root_gone();
            walk.interrupted = true;
        }
        if !walk.interrupted {
            if let Some(w) = &mut self.watcher {
                w.sync(rel, &walk.dirs, &walk.unlisted);
                self.refresh_watch_state();
            }
        }
        walk
    }

    fn reconcile_walk_logged(&mut self, rel: &str, walk: scan::Walk, reset: bool) {
        if let Err(e) = self.reconcile(rel, walk, reset) {
            tracing::error!(path = rel, error = %e, "indexing failed; retrying at the next rescan");
        }
        self.refresh_counts();
    }

    /// Brings the index of `rel` (and its ancestors' directory ids) in line with `walk`, a
    /// fresh walk of `rel`.
    fn reconcile(&mut self, rel: &str, walk: scan::Walk, reset: bool) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut old_files: HashMap<String, FileStat> = self
            .store
            .file_stats_under(&self.key, rel)?
            .into_iter()
            .map(|f| (f.path.clone(), f))
            .collect();
        let old_dirs: HashSet<String> = self
            .store
            .dirs_under(&self.key, rel)?
            .into_iter()
            .map(|d| d.path)
            .collect();

        let mut change = IndexChange {
            errors_under: Some(rel.to_string()),
            errors: walk.errors,
            skipped: walk.skipped,
            ..Default::default()
        };
        // What the walk could not see stays as it was (a listing that failed is not a folder
        // emptied: with no file descriptor left, a rescan would otherwise drop every row).
        let unseen = walk.unreadable;
        let kept = |path: &str| unseen.iter().any(|u| is_at_or_below(path, u));
        let mut to_hash = Vec::new();
        // An empty table (a first scan) has nothing to reuse: skip one query per file.
        let may_reuse = !old_files.is_empty() || self.store.has_files()?;
        let mut changed = Vec::new();
        for found in walk.files {
            match old_files.remove(&found.path) {
                Some(row) if row.stamp == found.stamp => {}
                _ if !may_reuse => to_hash.push(found),
                _ => match self.reusable(&found)? {
                    Some(row) if self.rules.changed_since_placed(&row.path, &row.id) => {
                        changed.push(row.path);
                    }
                    Some(row) => change.upsert_files.push(row),
                    None => to_hash.push(found),
                },
            }
        }
        change.remove_files = old_files.into_keys().filter(|p| !kept(p)).collect();
        for path in changed {
            drop_changed(path, &mut change);
        }

        // Directories: the walked ones, and every ancestor of `rel` while something exists there.
        let mut new_dirs: BTreeSet<String> = walk.dirs.into_iter().collect();
        if !new_dirs.is_empty() || !change.upsert_files.is_empty() || !to_hash.is_empty() {
            new_dirs.extend(ancestors(rel));
        }
        new_dirs.insert(String::new());
        change.remove_dirs = old_dirs
            .iter()
            .filter(|d| !new_dirs.contains(*d) && !kept(d))
            .cloned()
            .collect();
        // New directories get a placeholder row now and their id in `update_dir_ids`.
        change.upsert_dirs = new_dirs
            .iter()
            .filter(|d| is_at_or_below(d, rel) && !old_dirs.contains(*d))
            .map(|d| DirRow {
                path: d.clone(),
                id: PLACEHOLDER_ID,
                size: 0,
                files: 0,
            })
            .collect();
        let mut delta = Delta {
            upserted: Vec::new(),
            removed: change
                .remove_files
                .iter()
                .chain(&change.remove_dirs)
                .cloned()
                .collect(),
        };

        let unchanged = to_hash.is_empty() && !change.touches_entries();
        self.hash_and_commit(to_hash, change, &mut delta)?;
        if self.interrupted() {
            // Half a change: the next scan (or the next folder) starts over.
            return Ok(());
        }
        if unchanged && !reset {
            // The common case of the periodic rescan: nothing to recompute.
            return Ok(());
        }
        // Directory ids: every directory at or below `rel`, and every ancestor.
        let mut affected: BTreeSet<String> = new_dirs
            .into_iter()
            .filter(|d| is_at_or_below(d, rel))
            .collect();
        affected.extend(ancestors(rel));
        self.update_dir_ids(&affected, &mut delta)?;
        if self.interrupted() {
            return Ok(());
        }
        if reset || !delta.upserted.is_empty() || !delta.removed.is_empty() {
            self.publish(delta, reset)?;
        }
        tracing::debug!(path = rel, elapsed = ?started.elapsed(), "reconciled");
        Ok(())
    }

    /// A file hashed before (the same stamp, under any root), re-keyed to `found`.
    fn reusable(&self, found: &scan::FoundFile) -> Result<Option<FileRow>, StoreError> {
        Ok(self.store.reusable_hash(&found.stamp)?.map(|row| FileRow {
            path: found.path.clone(),
            ..row
        }))
    }

    /// Hashes `to_hash` in batches, committing each batch; then commits `change` (reused
    /// hashes, removals, directories, errors) in one transaction.
    fn hash_and_commit(
        &mut self,
        to_hash: Vec<scan::FoundFile>,
        mut change: IndexChange,
        delta: &mut Delta,
    ) -> Result<(), StoreError> {
        let mut progress = HashingProgress {
            files_total: to_hash.len() as u64,
            bytes_total: to_hash.iter().map(|f| f.stamp.size).sum(),
            ..Default::default()
        };
        let mut hashed = Vec::new();
        let mut queue = to_hash.into_iter().peekable();
        let pool = self.pool.clone();
        let root = self.root.clone();
        let shared = self.shared.clone();
        // A pipeline: the pool hashes batch n + 1 while this thread records batch n.
        let mut in_flight: Option<Vec<Hashed>> = None;
        loop {
            if progress.files_total > 0 {
                self.set_progress(Some(progress.clone()));
            }
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(f) = queue.next_if(|f| {
                !self.interrupted()
                    && batch.len() < BATCH_FILES
                    && (batch.is_empty() || bytes + f.stamp.size <= BATCH_BYTES)
            }) {
                bytes += f.stamp.size;
                batch.push(f);
            }
            let mut next = None;
            let mut recorded = Ok(());
            pool.in_place_scope(|scope| {
                if !batch.is_empty() {
                    let (root, next, shared) = (&root, &mut next, &shared);
                    scope.spawn(move |_| *next = Some(hash_batch(root, batch, shared)));
                }
                if let Some(results) = in_flight.take() {
                    recorded =
                        self.record_batch(results, &mut progress, &mut change, delta, &mut hashed);
                }
            });
            recorded?;
            match next {
                Some(results) => in_flight = Some(results),
                None => break,
            }
        }
        self.set_progress(None);
        if self.interrupted() {
            return Ok(());
        }
        self.store.apply_index_change(&self.key, &change)?;
        delta.upserted.extend(
            change
                .upsert_files
                .into_iter()
                .chain(hashed)
                .map(file_entry),
        );
        Ok(())
    }

    /// Records one hashed batch: counters, rows (committed at once), errors and retries.
    fn record_batch(
        &mut self,
        results: Vec<Hashed>,
        progress: &mut HashingProgress,
        change: &mut IndexChange,
        delta: &mut Delta,
        hashed: &mut Vec<FileRow>,
    ) -> Result<(), StoreError> {
        let mut part = IndexChange::default();
        for (found, result) in results {
            progress.files_done += 1;
            progress.bytes_done += found.stamp.size;
            {
                let mut status = self.shared.status.lock().expect("bug: poisoned");
                status.hashed_files += 1;
                status.hashed_bytes += found.stamp.size;
            }
            let unchanged = |m: &std::fs::Metadata| scan::Stamp::of(m) == found.stamp;
            match result {
                Ok((hash, _))
                    if self
                        .rules
                        .changed_since_placed(&found.path, hash.id.as_bytes()) =>
                {
                    delta.removed.push(found.path.clone());
                    drop_changed(found.path, change);
                }
                Ok((hash, after)) if unchanged(&after) => part.upsert_files.push(FileRow {
                    path: found.path,
                    stamp: found.stamp,
                    id: *hash.id.as_bytes(),
                    piece_size: hash.layout.piece_size(),
                    pieces: hash.pieces_bytes(),
                }),
                // Deleted since the walk.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    delta.removed.push(found.path.clone());
                    change.remove_files.push(found.path);
                }
                // Changed while we read it: index it once it has settled.
                Ok(_) => {
                    self.pending.insert(found.path, Instant::now());
                }
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.pending.insert(found.path, Instant::now());
                }
                // Stopped on purpose: the file is neither an error nor indexed.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => change.errors.push(ScanError {
                    path: found.path,
                    reason: format!("cannot read it: {e}"),
                }),
            }
        }
        self.store.apply_index_change(&self.key, &part)?;
        hashed.append(&mut part.upsert_files);
        Ok(())
    }

    /// Recomputes the ids of `dirs` from the stored entries; writes and reports the changed ones.
    fn update_dir_ids(
        &mut self,
        dirs: &BTreeSet<String>,
        delta: &mut Delta,
    ) -> Result<(), StoreError> {
        let entries = self.store.entries(&self.key)?;
        let old: HashMap<String, DirRow> = self
            .store
            .dirs_under(&self.key, "")?
            .into_iter()
            .map(|d| (d.path.clone(), d))
            .collect();
        let mut change = IndexChange::default();
        // Only directories that are indexed (new ones have a placeholder row by now).
        for dir in dirs.iter().filter(|d| old.contains_key(*d)) {
            if self.interrupted() {
                return Ok(());
            }
            let row = dir_row(&entries, dir);
            if old.get(dir) != Some(&row) {
                delta.upserted.push(dir_entry(row.clone()));
                change.upsert_dirs.push(row);
            }
        }
        self.store.apply_index_change(&self.key, &change)
    }

    /// Publishes `delta`, or with `reset` the whole index of the share.
    fn publish(&mut self, delta: Delta, reset: bool) -> Result<(), StoreError> {
        if reset {
            let all = all_entries(&self.store, &self.key)?;
            // The complete index goes out: snapshots show it from now on. (A subscriber takes
            // a reset as its cue to read a snapshot at once; while `hidden` it would read
            // nothing, and lose the new folder until the next reset.)
            self.shared.hidden.store(false, Ordering::Release);
            self.send(true, all, Vec::new())
        } else {
            self.send(false, delta.upserted, delta.removed)
        }
    }

    /// Writes the next index version and sends the delta that leads to it.
    fn send(
        &mut self,
        reset: bool,
        upserted: Vec<IndexEntry>,
        removed: Vec<String>,
    ) -> Result<(), StoreError> {
        self.version += 1;
        self.store.set_meta(
            version_key(self.shared.collection),
            &self.version.to_string(),
        )?;
        let delta = IndexDelta {
            version: self.version,
            reset,
            upserted,
            removed,
        };
        tracing::debug!(
            version = delta.version,
            upserted = delta.upserted.len(),
            removed = delta.removed.len(),
            "index changed"
        );
        // No subscriber is fine: nobody needs the delta yet.
        let _ = self.deltas.send(Arc::new(delta));
        Ok(())
    }

    fn set_progress(&self, progress: Option<HashingProgress>) {
        self.shared.status.lock().expect("bug: poisoned").hashing = progress;
    }

    fn refresh_counts(&self) {
        match self.store.index_counts(&self.key) {
            Ok(c) => {
                let mut status = self.shared.status.lock().expect("bug: poisoned");
                status.files = c.files;
                status.dirs = c.dirs;
                status.bytes = c.bytes;
                status.errors = c.errors;
                status.skipped = c.skipped;
                status.version = self.version;
            }
            Err(e) => tracing::warn!(error = %e, "cannot count the index"),
        }
    }
}

/// The stored row for directory `dir`, computed from all entries of the share (sorted).
fn dir_row(entries: &[EntryRow], dir: &str) -> DirRow {
    let (encoded, size, files) = manifest::encode_below(entries, dir);
    DirRow {
        path: dir.to_string(),
        id: *manifest::id_of(&encoded).as_bytes(),
        size,
        files,
    }
}

/// Whether `path` is `dir` or below it ("" is above everything).
fn is_at_or_below(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path == dir
        || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// The proper ancestors of `rel`, the root ("") included.
fn ancestors(rel: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut at = 0;
    while let Some(i) = rel[at..].find('/') {
        out.push(rel[..at + i].to_string());
        at += i + 1;
    }
    out
}

/// The paths of `paths` that have no ancestor in `paths`.
fn outermost(mut paths: Vec<String>) -> Vec<String> {
    paths.sort();
    let mut out: Vec<String> = Vec::new();
    for p in paths {
        if !out.iter().any(|o| is_at_or_below(&p, o)) {
            out.push(p);
        }
    }
    out
}

/// Every entry of the share at `key` (directories and files), sorted by path. A directory
/// whose id is not computed yet (the placeholder a scan commits before its files are all
/// hashed) is left out: it has no id to show or send.
fn all_entries(store: &Store, key: &str) -> Result<Vec<IndexEntry>, StoreError> {
    // The root is the only directory `entries` leaves out; it sorts first.
    let root = store
        .dirs_under(key, "")?
        .into_iter()
        .find(|d| d.path.is_empty() && d.id != PLACEHOLDER_ID);
    let rest = store
        .entries(key)?
        .into_iter()
        .filter_map(IndexEntry::of_row);
    Ok(root.map(dir_entry).into_iter().chain(rest).collect())
}

fn file_entry(f: FileRow) -> IndexEntry {
    IndexEntry {
        path: f.path,
        kind: Kind::File,
        size: f.stamp.size,
        id: Id(f.id),
    }
}

fn dir_entry(d: DirRow) -> IndexEntry {
    IndexEntry {
        path: d.path,
        kind: Kind::Dir,
        size: d.size,
        id: Id(d.id),
    }
}

/// A file and the outcome of hashing it (with its metadata once read).
type Hashed = (
    scan::FoundFile,
    std::io::Result<(super::pieces::FileHash, std::fs::Metadata)>,
);

/// Hashes a batch in parallel on the current rayon pool.
fn hash_batch(root: &Path, batch: Vec<scan::FoundFile>, shared: &Shared) -> Vec<Hashed> {
    let stop = || shared.interrupted();
    batch
        .into_par_iter()
        .map(|f| {
            let result =
                hasher::hash_file_with_metadata(&scan::native(root, &f.path), f.stamp.size, &stop);
            (f, result)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_helpers() {
        assert_eq!(ancestors("a/b/c"), ["", "a", "a/b"]);
        assert_eq!(ancestors("a"), [""]);
        assert!(is_at_or_below("a/b", "a") && is_at_or_below("a", "a") && is_at_or_below("x", ""));
        assert!(!is_at_or_below("ab", "a") && !is_at_or_below("a", "a/b"));
        assert_eq!(
            outermost(vec!["a/b".into(), "a".into(), "ab".into(), "a/c/d".into()]),
            ["a", "ab"]
        );
        assert_eq!(outermost(vec!["x".into(), "".into()]), [""]);
    }

    #[test]
    fn a_directory_whose_id_is_not_computed_yet_is_not_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        let row = |path: &str, id| DirRow {
            path: path.into(),
            id,
            size: 0,
            files: 0,
        };
        let change = IndexChange {
            upsert_dirs: vec![
                row("", [7; 32]),
                row("new", PLACEHOLDER_ID),
                row("old", [8; 32]),
            ],
            ..Default::default()
        };
        store.apply_index_change("/r", &change).unwrap();
        let paths: Vec<String> = all_entries(&store, "/r")
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, ["", "old"]);
    }

    #[test]
    fn a_directory_id_is_the_hash_of_its_manifest() {
        let file = |p: &str, size, fill| EntryRow {
            path: p.into(),
            is_dir: false,
            size,
            id: [fill; 32],
            mtime_ns: 0,
        };
        let dir = |p: &str| EntryRow {
            path: p.into(),
            is_dir: true,
            size: 0,
            id: [0; 32],
            mtime_ns: 0,
        };
        let entries = vec![dir("d"), file("d/x", 3, 1), dir("d/y"), file("e", 4, 2)];
        let row = dir_row(&entries, "d");
        let mut expected = vec![
            manifest::Entry {
                path: "x".into(),
                kind: Kind::File,
                size: 3,
                id: Some(Id([1; 32])),
            },
            manifest::Entry {
                path: "y".into(),
                kind: Kind::Dir,
                size: 0,
                id: None,
            },
        ];
        assert_eq!(
            row.id,
            *manifest::id_of(&manifest::encode(&mut expected)).as_bytes()
        );
        assert_eq!((row.size, row.files), (3, 1));
        let root = dir_row(&entries, "");
        assert_eq!((root.size, root.files), (7, 2));
        let empty = dir_row(&entries, "d/y");
        assert_eq!(empty.id, *blake3::hash(manifest::MAGIC).as_bytes());
    }
}
