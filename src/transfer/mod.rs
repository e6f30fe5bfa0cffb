//! Downloads: fetching content by id from every peer that holds it, and serving it to others.
//!
//! - [`Transfers`]: the daemon's downloads: start ([`Transfers::get`]), watch
//!   ([`Transfers::list`]), cancel, and resume after a restart. Each download is one task
//!   (`download/`, one file per phase) that finds the holders through the leader, fetches the
//!   piece list or manifest, then pulls units from every holder at once through per-peer
//!   fetchers, steered by the [`scheduler`], and persists its progress in the store.
//! - [`units`]: what a download fetches (its `Plan` of units and their checks), built only
//!   from data checked against the id.
//! - [`scheduler`]: which unit goes to which peer (the `Planner`, a plain struct, no I/O).
//! - [`serve`]: answering other nodes' piece-list, manifest and piece requests.
//! - `names.rs`: names and no-clobber placement in the download folder.

mod attrs;
mod download;
mod names;
pub mod scheduler;
pub mod serve;
pub mod units;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use iwant_behaviours::{
    id::{Id, IdPrefix},
    search,
};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Folders,
    leader::{self, ask::AskError, LeaderHandle},
    net::NetworkClient,
    share::{Kind, Offered},
    store::StoreError,
};

/// How many finished (done, failed, cancelled) downloads `iwant status` still shows.
pub const KEEP_FINISHED: usize = 32;

/// Where a download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadState {
    /// Finding holders, fetching the piece list or manifest.
    Starting,
    /// Fetching units.
    Fetching,
    /// No holder is reachable (or the disk is full); it goes on by itself when that changes.
    Waiting,
    /// Checking the finished data once more.
    Verifying,
    /// Complete: `path` says where it is.
    Done,
    /// Gave up; `message` says why.
    Failed,
    /// Cancelled by the user; its partial data is removed.
    Cancelled,
}

impl DownloadState {
    /// Whether the download has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DownloadState::Done | DownloadState::Failed | DownloadState::Cancelled
        )
    }
}

/// A download's progress, as `iwant get` and `iwant status` show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The content id (64 hex digits).
    pub id: Id,
    /// The name it gets in the download folder.
    pub name: String,
    /// File or directory.
    pub kind: Kind,
    /// Where it is.
    pub state: DownloadState,
    /// Why it waits or failed, or what it does now.
    pub message: Option<String>,
    /// Bytes to fetch (identical contents counted once).
    pub bytes_total: u64,
    /// Bytes verified so far.
    pub bytes_done: u64,
    /// Distinct files in all, and complete (1 and 0/1 for a file).
    pub files_total: u64,
    /// Distinct files complete.
    pub files_done: u64,
    /// Peers it is fetching from now.
    pub peers: u32,
    /// Some of them (peer ids as text, at most 8).
    pub from: Vec<String>,
    /// Bytes per second over the last seconds.
    pub rate: u64,
    /// Where the finished download is.
    pub path: Option<PathBuf>,
    /// Bytes fetched from the network so far in this run (verified or not).
    pub bytes_fetched: u64,
    /// Bytes copied from this node's own shared folder instead of fetched.
    pub bytes_local: u64,
    /// Bytes found verified on disk when this run of the download started (resume).
    pub bytes_resumed: u64,
    /// Milliseconds from the start of this run of the download to now, or to its end.
    pub elapsed_ms: u64,
    /// Set while the download cannot write its data (a full disk, a read-only or removed
    /// download folder): what failed. It keeps what it has and retries every few seconds.
    pub write_error: Option<String>,
}

/// How `iwant get` asked for a download.
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// The name to save it under instead of the holder's.
    pub name: Option<String>,
    /// The folder to save it in (checked by the caller) instead of the download folder.
    pub to: Option<PathBuf>,
    /// Fetch it even if this node has it already.
    pub again: bool,
}

/// What a get did.
#[derive(Debug, Clone)]
pub enum Got {
    /// A download runs (a new one, or the one that already ran).
    Download(Progress),
    /// This node has the content already, at `path`: nothing is fetched.
    AlreadyHave {
        /// The full id.
        id: Id,
        /// Where it is.
        path: PathBuf,
    },
}

/// Why a download could not be started or found.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// Not an id or id prefix.
    #[error("{0:?} is not an id: give the id (or its first digits, at least 4) that `iwant search` shows")]
    BadId(String),
    /// The name asked for is not one name.
    #[error(
        "{0:?} cannot be a file name: give one name without / or \\ (and --to for the folder)"
    )]
    BadName(String),
    /// Nobody shares it.
    #[error("no node shares anything with an id starting with {0}; find ids with `iwant search <words>`")]
    NotFound(String),
    /// Several ids start with the prefix.
    #[error("{prefix} is ambiguous; it starts {} ids:\n{}\nGive more digits.", .candidates.len(), .candidates.join("\n"))]
    Ambiguous {
        /// The prefix.
        prefix: String,
        /// `<id> <kind> <path>` lines.
        candidates: Vec<String>,
    },
    /// No download matches (cancel).
    #[error("no download has an id starting with {0}")]
    NoDownload(String),
    /// The download to cancel has ended already.
    #[error("the download of {name} has ended already ({how}); there is nothing to cancel. `iwant status --clear` removes ended downloads from the list")]
    Ended {
        /// Its name.
        name: String,
        /// `done: <path>`, `failed: <why>` or `cancelled`.
        how: String,
    },
    /// The leader could not be asked.
    #[error(transparent)]
    Ask(#[from] AskError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Slot {
    progress: Arc<watch::Sender<Progress>>,
    cancel: CancellationToken,
    /// Cancelled when the user cancelled, so the task removes its data.
    cancelled: CancellationToken,
    /// When it ended, for pruning.
    order: u64,
}

/// The daemon's downloads. Cheap to clone.
#[derive(Clone)]
pub struct Transfers {
    inner: Arc<Inner>,
}

struct Inner {
    net: NetworkClient,
    leader: LeaderHandle,
    index: Offered,
    folders: watch::Receiver<Folders>,
    slots: Mutex<BTreeMap<Id, Slot>>,
    counter: std::sync::atomic::AtomicU64,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Told of every download that completes or fails ([`Transfers::on_end`]).
    on_end: std::sync::OnceLock<OnEnd>,
}

/// What [`Transfers::on_end`] calls.
pub type OnEnd = Arc<dyn Fn(&Progress) + Send + Sync>;

impl Transfers {
    /// The downloads of a node; its tasks run on `tasks` and stop with `shutdown`.
    pub fn new(
        net: NetworkClient,
        leader: LeaderHandle,
        index: Offered,
        folders: watch::Receiver<Folders>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                net,
                leader,
                index,
                folders,
                slots: Mutex::new(BTreeMap::new()),
                counter: Default::default(),
                shutdown,
                tasks,
                on_end: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Starts again every download the store holds (after a restart or a crash).
    pub async fn resume_all(&self) -> Result<usize, StoreError> {
        let db = self.inner.index.db().clone();
        let rows = tokio::task::spawn_blocking(move || db.get()?.downloads())
            .await
            .expect("bug: store task panicked")?;
        let n = rows.len();
        for row in rows {
            tracing::info!(file = %row.name, id = %row.id.short(12), "resuming download");
            self.spawn(download::Start::Resume(row));
        }
        Ok(n)
    }

    /// Starts downloading the content whose id starts with `prefix`, or returns the download
    /// of it that already runs, or where this node has it already (unless `options.again`).
    pub async fn get(&self, prefix: &str, options: GetOptions) -> Result<Got, GetError> {
        let prefix = parse_prefix(prefix)?;
        if let Some(p) = self.find_active(&prefix) {
            return Ok(Got::Download(p));
        }
        let name = match options.name.as_deref().map(str::trim) {
            None => None,
            Some(n) if n.is_empty() || n == "." || n == ".." || n.contains(['/', '\\', '\0']) => {
                return Err(GetError::BadName(n.to_string()))
            }
            Some(n) => Some(n.to_string()),
        };
        let request = search::Request::Locate {
            prefix: prefix.to_string(),
            max: 16,
        };
        let answer = leader::ask::ask(
            &self.inner.net,
            &self.inner.leader,
            request,
            leader::ask::ASK_DEADLINE,
        )
        .await?;
        let hits = answer.results.hits;
        let hit = match hits.len() {
            0 => return Err(GetError::NotFound(prefix.to_string())),
            1 => hits.into_iter().next().expect("bug: one hit"),
            _ => {
                return Err(GetError::Ambiguous {
                    prefix: prefix.to_string(),
                    candidates: hits
                        .iter()
                        .map(|h| {
                            let kind = match h.kind {
                                iwant_behaviours::wire::Kind::File => "file",
                                iwant_behaviours::wire::Kind::Dir => "dir ",
                            };
                            format!("  {}  {kind}  {}", h.id, h.path)
                        })
                        .collect(),
                })
            }
        };
        let id = hit.id;
        if let Some(p) = self.find_active(&IdPrefix::from(hit.id)) {
            return Ok(Got::Download(p));
        }
        if !options.again {
            if let Some(path) = self.already_have(&id).await {
                return Ok(Got::AlreadyHave { id, path });
            }
        }
        let dest = match options.to {
            Some(to) => to,
            None => self.inner.folders.borrow().download_dir.clone(),
        };
        let name = names::download_name(name.as_deref().unwrap_or(&hit.path), &id);
        let target = download::Target {
            id,
            kind: hit.kind,
            name,
            size: hit.size,
            dest,
        };
        Ok(Got::Download(self.spawn(download::Start::New(target))))
    }

    /// Where this node has content `id` now, if it does: a download of this run that placed
    /// it (and its copy is still there), or in the shared folder or among the downloads it
    /// offers (as indexed: the indexes follow the disk within a second).
    async fn already_have(&self, id: &Id) -> Option<PathBuf> {
        let placed = self
            .inner
            .slots
            .lock()
            .expect("bug: poisoned")
            .get(id)
            .and_then(|s| {
                let p = s.progress.borrow();
                (p.state == DownloadState::Done)
                    .then(|| p.path.clone())
                    .flatten()
            });
        if let Some(path) = placed.filter(|p| p.exists()) {
            return Some(path);
        }
        // Looked up by id in the store, each collection's current folder only.
        let roots: Vec<(PathBuf, String)> = self
            .inner
            .index
            .indexes()
            .filter(|(_, index)| !index.status().root_missing)
            .map(|(_, index)| (index.root(), index.root_key()))
            .collect();
        let (db, id) = (self.inner.index.db().clone(), *id);
        tokio::task::spawn_blocking(move || {
            let store = db.get().ok()?;
            roots.iter().find_map(|(folder, key)| {
                let rel = match store.shared_file(key, &id).ok().flatten() {
                    Some(row) => row.path,
                    None => store.shared_dir(key, &id).ok().flatten()?,
                };
                Some(crate::share::scan::native(folder, &rel))
            })
        })
        .await
        .ok()
        .flatten()
    }

    /// Calls `tell` with the last progress of every download that completes or fails from now
    /// on (those resumed at start included); only the first call sets it.
    pub fn on_end(&self, tell: OnEnd) {
        let _ = self.inner.on_end.set(tell);
    }

    /// Every download of this run: running ones first (oldest first), then the last
    /// [`KEEP_FINISHED`] that ended.
    pub fn list(&self) -> Vec<Progress> {
        let slots = self.inner.slots.lock().expect("bug: poisoned");
        let mut all: Vec<(u64, Progress)> = slots
            .values()
            .map(|s| (s.order, s.progress.borrow().clone()))
            .collect();
        all.sort_by_key(|(order, p)| (p.state.is_final(), *order));
        all.into_iter().map(|(_, p)| p).collect()
    }

    /// The progress of the download whose id starts with `prefix` (running ones first).
    pub fn find(&self, prefix: &str) -> Option<Progress> {
        let prefix = parse_prefix(prefix).ok()?;
        self.with_slot(&prefix, false, |s| s.progress.borrow().clone())
    }

    /// The progress of the download whose id starts with `prefix` (running ones first), to
    /// follow as it changes.
    pub fn follow(&self, prefix: &str) -> Result<watch::Receiver<Progress>, GetError> {
        let prefix = parse_prefix(prefix)?;
        self.with_slot(&prefix, false, |s| s.progress.subscribe())
            .ok_or_else(|| GetError::NoDownload(prefix.to_string()))
    }

    /// Stops the running download whose id starts with `prefix` and removes its partial data.
    /// One that ended already (as `iwant status` lists it) is [`GetError::Ended`].
    pub async fn cancel(&self, prefix: &str) -> Result<Progress, GetError> {
        let prefix = parse_prefix(prefix)?;
        let Some((progress, cancel, flag)) = self.with_slot(&prefix, true, |s| {
            (s.progress.clone(), s.cancel.clone(), s.cancelled.clone())
        }) else {
            let ended = self
                .find_ended(&prefix)
                .ok_or_else(|| GetError::NoDownload(prefix.to_string()))?;
            let how = match ended.state {
                DownloadState::Done => format!(
                    "done: {}",
                    ended
                        .path
                        .as_deref()
                        .unwrap_or(std::path::Path::new(""))
                        .display()
                ),
                DownloadState::Failed => {
                    format!("failed: {}", ended.message.as_deref().unwrap_or_default())
                }
                _ => "cancelled".to_owned(),
            };
            return Err(GetError::Ended {
                name: ended.name,
                how,
            });
        };
        flag.cancel();
        cancel.cancel();
        // The task removes its data and says so; wait for it a bounded time.
        let mut follow = progress.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            follow.wait_for(|p| p.state.is_final()),
        )
        .await;
        let last = progress.borrow().clone();
        Ok(last)
    }

    /// Forgets every download that ended; says how many.
    pub fn clear_ended(&self) -> usize {
        let mut slots = self.inner.slots.lock().expect("bug: poisoned");
        let before = slots.len();
        slots.retain(|_, s| !s.progress.borrow().state.is_final());
        before - slots.len()
    }

    fn find_ended(&self, prefix: &IdPrefix) -> Option<Progress> {
        self.with_slot(prefix, false, |s| s.progress.borrow().clone())
            .filter(|p| p.state.is_final())
    }

    fn find_active(&self, prefix: &IdPrefix) -> Option<Progress> {
        self.with_slot(prefix, true, |s| s.progress.borrow().clone())
    }

    /// What `f` makes of the download whose id starts with `prefix`: a running one first
    /// (the oldest), else the one that ended first; with `running`, only running ones.
    fn with_slot<T>(
        &self,
        prefix: &IdPrefix,
        running: bool,
        f: impl FnOnce(&Slot) -> T,
    ) -> Option<T> {
        let slots = self.inner.slots.lock().expect("bug: poisoned");
        slots
            .iter()
            .filter(|(id, _)| prefix.matches(id))
            .map(|(_, s)| (s.progress.borrow().state.is_final(), s))
            .filter(|(ended, _)| !(running && *ended))
            .min_by_key(|(ended, s)| (*ended, s.order))
            .map(|(_, s)| f(s))
    }

    fn spawn(&self, start: download::Start) -> Progress {
        let progress = Arc::new(watch::channel(start.initial_progress()).0);
        let snapshot = progress.borrow().clone();
        let cancel = self.inner.shutdown.child_token();
        let cancelled = CancellationToken::new();
        let order = self
            .inner
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut slots = self.inner.slots.lock().expect("bug: poisoned");
            slots.insert(
                snapshot.id,
                Slot {
                    progress: progress.clone(),
                    cancel: cancel.clone(),
                    cancelled: cancelled.clone(),
                    order,
                },
            );
            prune(&mut slots);
        }
        let ctx = download::Context {
            net: self.inner.net.clone(),
            holders: Arc::new(download::LeaderHolders {
                net: self.inner.net.clone(),
                leader: self.inner.leader.clone(),
            }),
            index: self.inner.index.clone(),
            progress,
            cancel,
            cancelled,
        };
        let (inner, ended) = (self.inner.clone(), ctx.progress.subscribe());
        self.inner.tasks.spawn(async move {
            download::run(ctx, start).await;
            let last = ended.borrow().clone();
            if let (Some(tell), DownloadState::Done | DownloadState::Failed) =
                (inner.on_end.get(), last.state)
            {
                tell(&last);
            }
        });
        snapshot
    }
}

/// Drops the oldest finished downloads beyond [`KEEP_FINISHED`].
fn prune(slots: &mut BTreeMap<Id, Slot>) {
    let mut finished: Vec<(u64, Id)> = slots
        .iter()
        .filter(|(_, s)| s.progress.borrow().state.is_final())
        .map(|(id, s)| (s.order, *id))
        .collect();
    if finished.len() > KEEP_FINISHED {
        finished.sort_unstable();
        for (_, id) in &finished[..finished.len() - KEEP_FINISHED] {
            slots.remove(id);
        }
    }
}

/// The shortest prefix `get`, `downloads` and `cancel` accept.
pub const MIN_PREFIX: usize = 4;

/// An id prefix of [`MIN_PREFIX`] to 64 hex digits.
fn parse_prefix(text: &str) -> Result<IdPrefix, GetError> {
    match text.parse::<IdPrefix>() {
        Ok(prefix) if prefix.len() >= MIN_PREFIX => Ok(prefix),
        _ => Err(GetError::BadId(text.to_string())),
    }
}
