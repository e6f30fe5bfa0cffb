//! One download's task, from an id to a verified file or directory in the download folder.
//!
//! A download is a sequence of [`Phase`]s, each in its own file:
//!
//! 1. **Prepare** (`prepare.rs`, a new download): the piece list of a file or the manifest of
//!    a directory, from this node's own index if it shares the id, else from a holder the
//!    leader names; checked against the id ([`Plan`]); persisted with an empty bitfield.
//! 2. **Set up** (`set_up.rs`): the partial file or directory tree (with its empty
//!    directories) in the download folder (files of several pieces are pre-sized when first
//!    written to); units already on disk are found by verifying them (so pieces written before
//!    a crash but not yet in the persisted bitfield are not fetched again); contents this node
//!    shares itself are copied, not fetched.
//! 3. **Fetch** (`fetch.rs`, the state machine [`fetch::Fetch`]; `fetcher.rs`, one holder's
//!    stream): the piece lists of a directory's large files, then one fetcher per holder, the
//!    [`Planner`](super::scheduler::Planner) deciding which unit each gets; holders are found
//!    through [`Holders`] every few seconds; a holder that sends bad data is dropped for this
//!    download; the bitfield is saved at most once a second.
//! 4. **Verify** (`verify.rs`): every distinct file is hashed once more from disk; a mismatch
//!    sends its bad pieces back to step 3.
//! 5. **Place** (`place.rs`): copies for identical contents, the attributes a holder told
//!    (`transfer::attrs`), then one rename into the download
//!    folder under a name that does not exist yet (` (1)`...): done, for the user. Then a
//!    `syncfs`, and the store forgets the download (a crash before that re-verifies the placed
//!    copy at the next start).
//!
//! The task shows its progress on a `watch` channel that `iwant get` follows, and stops when
//! its cancellation token fires (the user cancelled, or the node stops).

mod fetch;
mod fetcher;
mod place;
mod prepare;
mod set_up;
mod verify;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{future::BoxFuture, FutureExt};
use iwant_behaviours::{id::Id, search};
use libp2p::PeerId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{units::Plan, DownloadState, Progress};
use crate::{
    leader::{self, ask::Holding, LeaderHandle},
    net::NetworkClient,
    share::{Kind, Offered},
    store::{DownloadRow, Store},
};

/// Where a download finds the peers that hold its content: the leader, in the node; a given
/// list, in tests.
pub trait Holders<P = PeerId>: Send + Sync {
    /// The peers, this node not among them, that hold `id` now; or why there is no answer.
    fn find(&self, id: Id) -> BoxFuture<'static, Result<Vec<P>, String>>;

    /// The peers, this node not among them, that hold each of `ids` (in order), whole or
    /// partly; or why there is no answer. By default: nobody (a source that knows only whole
    /// holders of the whole content).
    fn find_each(&self, ids: Vec<Id>) -> BoxFuture<'static, Result<Vec<Holding<P>>, String>>
    where
        P: Send + 'static,
    {
        let none: Vec<Holding<P>> = ids.iter().map(|_| Holding::default()).collect();
        async move { Ok(none) }.boxed()
    }
}

/// The holders the leader knows.
pub struct LeaderHolders {
    /// This node's network.
    pub net: NetworkClient,
    /// Who leads.
    pub leader: LeaderHandle,
}

impl Holders for LeaderHolders {
    fn find(&self, id: Id) -> BoxFuture<'static, Result<Vec<PeerId>, String>> {
        let (net, leader) = (self.net.clone(), self.leader.clone());
        async move {
            let request = search::Request::Locate {
                prefix: id.to_hex().to_string(),
                max: 1,
            };
            let answer = leader::ask::ask(&net, &leader, request, leader::ask::ASK_DEADLINE)
                .await
                .map_err(|e| e.to_string())?;
            let me = net.local_peer_id();
            Ok(answer
                .results
                .hits
                .into_iter()
                .filter(|h| h.id == id)
                .flat_map(|h| h.holders)
                .filter_map(|p| p.parse::<PeerId>().ok())
                .filter(|p| *p != me)
                .collect())
        }
        .boxed()
    }

    fn find_each(&self, ids: Vec<Id>) -> BoxFuture<'static, Result<Vec<Holding>, String>> {
        let (net, leader) = (self.net.clone(), self.leader.clone());
        async move {
            let me = net.local_peer_id();
            let mut all = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(search::MAX_HOLDER_IDS) {
                let holders =
                    leader::ask::holders(&net, &leader, chunk.to_vec(), leader::ask::ASK_DEADLINE)
                        .await
                        .map_err(|e| e.to_string())?;
                all.extend(holders.into_iter().map(|mut h| {
                    h.whole.retain(|p| *p != me);
                    h.partial.retain(|(p, _)| *p != me);
                    h
                }));
            }
            Ok(all)
        }
        .boxed()
    }
}

/// What to download, as the user asked it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The full id.
    pub id: Id,
    /// File or directory.
    pub kind: Kind,
    /// The name in the download folder.
    pub name: String,
    /// Its size as the leader knows it.
    pub size: u64,
    /// The download folder.
    pub dest: PathBuf,
}

/// How a download task starts.
#[derive(Debug)]
pub enum Start {
    /// A new download.
    New(Target),
    /// One the store holds (the daemon restarted).
    Resume(DownloadRow),
}

impl Start {
    /// The progress shown before the task has done anything.
    pub fn initial_progress(&self) -> Progress {
        let (id, name, kind, size) = match self {
            Start::New(t) => (t.id, t.name.clone(), t.kind, t.size),
            Start::Resume(row) => (row.id, row.name.clone(), row.kind, row.size),
        };
        Progress {
            id,
            name,
            kind,
            state: DownloadState::Starting,
            message: None,
            bytes_total: size,
            bytes_done: 0,
            files_total: 0,
            files_done: 0,
            peers: 0,
            from: Vec::new(),
            rate: 0,
            path: None,
            bytes_fetched: 0,
            bytes_local: 0,
            bytes_resumed: 0,
            elapsed_ms: 0,
            write_error: None,
        }
    }
}

/// What a download task needs.
pub struct Context {
    /// This node's network, for the holders' streams.
    pub net: NetworkClient,
    /// Who holds the content.
    pub holders: Arc<dyn Holders>,
    /// This node's index and store.
    pub index: Offered,
    /// The progress, for every follower (`iwant get`, `status`, `cancel`) to watch.
    pub progress: Arc<watch::Sender<Progress>>,
    /// Stops the task: the user cancelled, or the node stops.
    pub cancel: CancellationToken,
    /// The user cancelled: the task removes its partial data as it stops.
    pub cancelled: CancellationToken,
}

/// Why a download stopped before the end.
enum Stop {
    /// Cancelled by the user or stopped by shutdown.
    Interrupted,
    /// Cannot go on.
    Failed(String),
}

impl Context {
    fn update(&self, f: impl FnOnce(&mut Progress)) {
        self.progress.send_modify(f);
    }

    fn set_state(&self, state: DownloadState, message: Option<String>) {
        self.update(|p| {
            p.state = state;
            p.message = message;
        });
    }

    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, Stop> {
        let db = self.index.db().clone();
        blocking(move || f(&*db.get()?))
            .await
            .map_err(|e| Stop::Failed(e.to_string()))
    }

    /// Sleeps, unless interrupted first.
    async fn pause(&self, d: Duration) -> Result<(), Stop> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.cancel.cancelled() => Err(Stop::Interrupted),
        }
    }
}

/// Runs one download to its end (or until cancelled or the node stops).
pub async fn run(ctx: Context, start: Start) {
    let id = ctx.progress.borrow().id;
    let started = Instant::now();
    let outcome = drive(&ctx, start).await;
    if let Some(offered) = &ctx.index.downloads {
        // A placed download is offered by the downloads indexer; an interrupted one, no more.
        offered.partial.remove(&id);
    }
    ctx.update(|p| p.elapsed_ms = started.elapsed().as_millis() as u64);
    match outcome {
        Ok((path, plan, started_ms)) => {
            tracing::info!(id = %id.short(12), path = %path.display(), "download complete");
            ctx.update(|p| {
                p.state = DownloadState::Done;
                p.message = None;
                p.bytes_done = p.bytes_total;
                p.files_done = p.files_total;
                p.peers = 0;
                p.from.clear();
                p.rate = 0;
                p.path = Some(path.clone());
            });
            // Done for the user; the row goes once the data is surely on disk, so a crash
            // before that re-checks the placed copy at the next start.
            let (placed, synced) = (path.clone(), plan.clone());
            blocking(move || place::sync_tree(&synced, &placed)).await;
            if let Err(Stop::Failed(e)) =
                ctx.store(move |s| s.forget_download(&id, started_ms)).await
            {
                tracing::warn!(error = %e, "cannot forget a finished download");
            }
            place::offer(&ctx, &path, &plan).await;
        }
        Err(Stop::Interrupted) if ctx.cancelled.is_cancelled() => {
            let part = ctx
                .store(move |s| {
                    let part = s.download(&id)?.map(|r| r.part);
                    s.delete_download(&id)?;
                    Ok(part)
                })
                .await;
            if let Ok(Some(part)) = part {
                remove_part(Path::new(&part));
            }
            tracing::info!(id = %id.short(12), "download cancelled; partial data removed");
            ctx.set_state(DownloadState::Cancelled, None);
        }
        Err(Stop::Interrupted) => {
            tracing::debug!(id = %id, "download stopped with the node; it resumes at the next start");
        }
        Err(Stop::Failed(reason)) => {
            tracing::warn!(id = %id, %reason, "download failed");
            ctx.set_state(DownloadState::Failed, Some(reason));
        }
    }
}

/// Runs blocking work (disk, SQLite, hashing) off the async threads and waits for it.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("bug: a blocking task of a download panicked")
}

fn remove_part(part: &Path) {
    let result = if part.is_dir() {
        std::fs::remove_dir_all(part)
    } else {
        std::fs::remove_file(part)
    };
    if let Err(e) = result {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %part.display(), error = %e, "cannot remove partial download");
        }
    }
}

/// Where a download task is. Each phase's work is in its own file; [`drive`] runs them in
/// order, and Verify sends a download back to Fetch when a file does not verify.
enum Phase {
    /// Get the piece list or manifest.
    Prepare(Target),
    /// Lay out the partial data; find what is there already.
    SetUp(DownloadRow),
    /// Fetch the units not done.
    Fetch(Box<Work>),
    /// Hash every file once more.
    Verify(Box<Work>),
    /// Move it into the download folder.
    Place(Box<Work>),
}

/// A download being fetched: its row, its plan, where its partial data is, and which units are
/// done.
struct Work {
    row: DownloadRow,
    plan: Plan,
    part: PathBuf,
    done: Vec<bool>,
}

/// Where a placed download is, its plan, and its row's start time.
type Placed = (PathBuf, Plan, i64);

/// Runs a download's phases to a placed result.
async fn drive(ctx: &Context, start: Start) -> Result<Placed, Stop> {
    let mut phase = match start {
        Start::New(target) => Phase::Prepare(target),
        // Persisted before its piece list or manifest arrived (or a one-piece file, whose
        // piece list is empty: it is looked up again, which is cheap), and not placed yet:
        // prepare it again.
        Start::Resume(row) if row.meta.is_empty() && row.placed.is_none() => {
            Phase::Prepare(Target {
                id: row.id,
                kind: row.kind,
                name: row.name.clone(),
                size: row.size,
                dest: PathBuf::from(&row.dest),
            })
        }
        Start::Resume(row) => Phase::SetUp(row),
    };
    loop {
        phase = match phase {
            Phase::Prepare(target) => Phase::SetUp(prepare::run(ctx, target).await?),
            Phase::SetUp(row) => match set_up::run(ctx, row).await? {
                set_up::SetUp::Placed(placed) => return Ok(placed),
                set_up::SetUp::Ready(work) => Phase::Fetch(work),
            },
            Phase::Fetch(mut work) => {
                set_up::piece_lists(ctx, &mut work).await?;
                fetcher::run(ctx, &work).await?;
                Phase::Verify(work)
            }
            Phase::Verify(mut work) => {
                if verify::run(ctx, &mut work).await {
                    Phase::Place(work)
                } else {
                    Phase::Fetch(work)
                }
            }
            Phase::Place(work) => return place::run(ctx, *work).await,
        }
    }
}
