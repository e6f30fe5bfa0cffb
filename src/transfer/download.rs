//! One download's task, from an id to a verified file or directory in the download folder.
//!
//! 1. **Prepare** (a new download): the piece list of a file or the manifest of a directory,
//!    from this node's own index if it shares the id, else from a holder the leader names;
//!    checked against the id ([`Plan`]); persisted with an empty bitfield.
//! 2. **Set up**: the partial file or directory tree (with its empty directories) in the
//!    download folder (files of several pieces are pre-sized when first written to); units
//!    already on disk are found by verifying them (so pieces written before a crash but not yet
//!    in the persisted bitfield are not fetched again); contents this node shares itself are
//!    copied, not fetched.
//! 3. **Fetch**: one fetcher per holder, the [`Planner`] deciding which unit each gets; holders
//!    are looked up again every few seconds (and at once when none is left); a holder that
//!    sends bad data is dropped for this download; the bitfield is saved at most once a second.
//! 4. **Verify**: every distinct file is hashed once more from disk; a mismatch sends its bad
//!    pieces back to step 3.
//! 5. **Place**: copies for identical contents, then one rename into the download folder under
//!    a name that does not exist yet (` (1)`...): done, for the user. Then a `syncfs`, and the
//!    store forgets the download (a crash before that re-verifies the placed copy at the next
//!    start).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use iwant_behaviours::{chunk::Status, content, search, wire::Id};
use libp2p::PeerId;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{
    fetch::{self, Event, Files, Job},
    names,
    scheduler::{self, Completed, Planner},
    serve,
    units::{self, Plan},
    DownloadState, Progress,
};
use crate::{
    fsio,
    leader::{self, LeaderHandle},
    net::NetworkClient,
    share::{self, scan, IndexHandle, Kind},
    store::{DownloadRow, Store},
};

/// How often a download asks the leader for holders while it has some, and while it has none.
const REFRESH_HOLDERS: Duration = Duration::from_secs(5);
const REFRESH_NO_HOLDERS: Duration = Duration::from_secs(1);
/// How long a holder whose stream failed is left alone.
const RETRY_PEER: Duration = Duration::from_secs(2);
/// How often the bitfield is saved, at most.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How long a download waits after a failed write before it tries again.
const WRITE_PAUSE: Duration = Duration::from_secs(2);
/// The progress tick: stalls, saves, rate.
const TICK: Duration = Duration::from_millis(200);

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
    pub net: NetworkClient,
    pub leader: LeaderHandle,
    pub index: IndexHandle,
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
    ctx.update(|p| p.elapsed_ms = started.elapsed().as_millis() as u64);
    match outcome {
        Ok((path, plan, started_ms)) => {
            tracing::info!(id = %id, path = %path.display(), "download complete");
            ctx.update(|p| {
                p.state = DownloadState::Done;
                p.message = None;
                p.bytes_done = p.bytes_total;
                p.files_done = p.files_total;
                p.peers = 0;
                p.rate = 0;
                p.path = Some(path.clone());
            });
            // Done for the user; the row goes once the data is surely on disk, so a crash
            // before that re-checks the placed copy at the next start.
            let placed = path.clone();
            blocking(move || sync_tree(&plan, &placed)).await;
            if let Err(Stop::Failed(e)) =
                ctx.store(move |s| s.forget_download(&id, started_ms)).await
            {
                tracing::warn!(error = %e, "cannot forget a finished download");
            }
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
            tracing::info!(id = %id, "download cancelled; partial data removed");
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

/// Runs a download to a placed result: where it is, its plan, and its row's start time.
async fn drive(ctx: &Context, start: Start) -> Result<(PathBuf, Plan, i64), Stop> {
    let row = match start {
        Start::New(target) => prepare(ctx, target).await?,
        // Persisted before its piece list or manifest arrived (or a one-piece file, whose
        // piece list is empty: it is looked up again, which is cheap), and not placed yet:
        // prepare it again.
        Start::Resume(row) if row.meta.is_empty() && row.placed.is_none() => {
            let target = Target {
                id: row.id,
                kind: row.kind,
                name: row.name.clone(),
                size: row.size,
                dest: PathBuf::from(&row.dest),
            };
            prepare(ctx, target).await?
        }
        Start::Resume(row) => row,
    };
    let id = row.id;
    let built = if row.kind == Kind::Dir {
        Plan::dir(id, &row.meta)
    } else {
        Plan::file(id, row.size, &row.meta)
    };
    let mut plan = match built {
        Ok(plan) => plan,
        Err(e) => {
            let key = row.id;
            let _ = ctx.store(move |s| s.delete_download(&key)).await;
            return Err(Stop::Failed(format!(
                "its saved state is unusable ({e}); start it again"
            )));
        }
    };
    let part = PathBuf::from(&row.part);
    let dest = PathBuf::from(&row.dest);
    if let Some(placed) = row.placed.as_deref().map(PathBuf::from) {
        // Finished before a crash or a stop, maybe before its data reached the disk.
        let (p, at) = (plan.clone(), placed.clone());
        let intact = blocking(move || verify_placed(&p, &at)).await;
        if intact {
            return Ok((placed, plan, row.started_ms));
        }
        tracing::warn!(path = %placed.display(), "a finished download was damaged by a crash; fetching it again");
        remove_part(&placed);
        let key = row.id;
        ctx.store(move |s| s.set_download_placed(&key, None))
            .await?;
    }
    ctx.update(|p| {
        p.bytes_total = plan.total_bytes();
        p.files_total = plan.files.len() as u64;
    });

    // Set up the partial tree, find what is on disk already, copy what we share ourselves.
    tracing::debug!(id = %id, "download prepared");
    let mut done = {
        let (plan2, part2) = (plan.clone(), part.clone());
        let saved = units::from_bitfield(&row.done, plan.unit_lens.len());
        blocking(move || set_up(&plan2, &part2, saved))
            .await
            .map_err(|e| Stop::Failed(format!("cannot create {}: {e}", part.display())))?
    };
    let resumed: u64 = (0..done.len())
        .filter(|&u| done[u])
        .map(|u| plan.unit_lens[u])
        .sum();
    ctx.update(|p| {
        p.bytes_resumed = resumed;
        p.bytes_done = resumed;
    });
    tracing::debug!(id = %id, "partial data set up");
    copy_local(ctx, &plan, &part, &mut done).await;
    tracing::debug!(id = %id, "local copies checked");

    loop {
        let unknown: Vec<bool> = plan.files.iter().map(|f| f.pieces.is_none()).collect();
        fetch_piece_lists(ctx, &id, &mut plan, &done).await?;
        if unknown.iter().any(|&u| u) {
            // Pieces of those files written before a restart can be verified now.
            let (p, d, known_before) = (
                plan.clone(),
                part.clone(),
                unknown.iter().map(|u| !u).collect::<Vec<_>>(),
            );
            let mut checked = std::mem::take(&mut done);
            done = blocking(move || {
                recheck(&p, &d, &mut checked, &known_before);
                checked
            })
            .await;
        }
        let plan_arc = Arc::new(plan.clone());
        fetch_all(ctx, &row, plan_arc.clone(), &part, &done).await?;
        ctx.set_state(DownloadState::Verifying, None);
        tracing::debug!(id = %id, "fetched; verifying");
        let (p, d) = (plan_arc.clone(), part.clone());
        let bad = blocking(move || verify_all(&p, &d)).await;
        if bad.is_empty() {
            break;
        }
        tracing::warn!(
            files = bad.len(),
            "finished files that do not verify; fetching their bad pieces again"
        );
        let (p, d) = (plan_arc.clone(), part.clone());
        done = blocking(move || {
            let mut done = vec![true; p.unit_lens.len()];
            for f in bad {
                for u in p.units_of(f) {
                    done[u] = false;
                }
            }
            recheck(&p, &d, &mut done, &[]);
            done
        })
        .await;
    }

    // Copies of identical contents, then into place.
    let (p, d, n) = (plan.clone(), part.clone(), row.name.clone());
    let placed = blocking(move || -> std::io::Result<PathBuf> {
        for f in &p.files {
            let first = scan::native(&d, &f.paths[0]);
            for other in &f.paths[1..] {
                std::fs::copy(&first, scan::native(&d, other))?;
            }
        }
        names::place(&d, &dest, &n, p.is_dir)
    })
    .await
    .map_err(|e| Stop::Failed(format!("cannot move the download into place: {e}")))?;
    let (key, at) = (row.id, placed.to_string_lossy().into_owned());
    ctx.store(move |s| s.set_download_placed(&key, Some(&at)))
        .await?;
    Ok((placed, plan, row.started_ms))
}

/// Whether every file of a placed download (every copy of identical contents too) hashes to
/// its id.
fn verify_placed(plan: &Plan, placed: &Path) -> bool {
    plan.files.iter().all(|f| {
        let paths: Vec<PathBuf> = if plan.is_dir {
            f.paths.iter().map(|p| scan::native(placed, p)).collect()
        } else {
            vec![placed.to_path_buf()]
        };
        paths
            .iter()
            .all(|p| share::hasher::hash_file(p).is_ok_and(|h| h.id == f.id))
    })
}

/// Makes sure every finished file's data is on disk before the download counts as complete:
/// one `syncfs` of the download folder's file system on Linux, a sync per file elsewhere.
fn sync_tree(plan: &Plan, part: &Path) {
    #[cfg(target_os = "linux")]
    if let Ok(f) = File::open(part) {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs only reads the descriptor, which `f` keeps open for the call.
        if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
            return;
        }
    }
    for i in 0..plan.files.len() {
        if let Ok(f) = File::open(plan.data_path(part, i)) {
            let _ = f.sync_all();
        }
    }
}

/// Step 1: the piece list or manifest, checked, and the download's row.
async fn prepare(ctx: &Context, target: Target) -> Result<DownloadRow, Stop> {
    // Persisted at once, with no piece list yet, so a download the node accepted survives a
    // stop or a crash while it still looks for a holder.
    let part = names::part_path(&target.dest, &target.name, &target.id);
    let mut row = DownloadRow {
        id: target.id,
        kind: target.kind,
        name: target.name.clone(),
        size: target.size,
        dest: target.dest.to_string_lossy().into_owned(),
        part: part.to_string_lossy().into_owned(),
        meta: Vec::new(),
        done: Vec::new(),
        placed: None,
        started_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    };
    let pending = row.clone();
    ctx.store(move |s| s.put_download(&pending)).await?;
    let mut asked: HashSet<PeerId> = HashSet::new();
    // The size goes with the piece list that proved itself (the leader's may be a liar's).
    let (size, meta) = loop {
        if let Some(found) = local_meta(ctx, &target).await {
            break found;
        }
        let mut last = String::from("no node holding it is reachable");
        match holders(&ctx.net, &ctx.leader, &target.id).await {
            Ok(holders) if holders.is_empty() => {}
            Ok(holders) => {
                let mut found = None;
                for peer in holders {
                    match fetch_meta(ctx, peer, &target).await {
                        Ok(meta) => {
                            found = Some(meta);
                            break;
                        }
                        Err(MetaError::Unusable(e)) => {
                            // Content-addressed: every holder serves these same bytes.
                            let key = row.id;
                            let _ = ctx.store(move |s| s.delete_download(&key)).await;
                            return Err(Stop::Failed(format!("its manifest is unusable: {e}")));
                        }
                        Err(MetaError::Peer(e)) => {
                            if asked.insert(peer) {
                                tracing::debug!(%peer, error = %e, "holder cannot give the piece list or manifest");
                            }
                            last = format!("{peer}: {e}");
                        }
                    }
                }
                if let Some(meta) = found {
                    break meta;
                }
            }
            Err(e) => last = e,
        }
        ctx.set_state(
            DownloadState::Waiting,
            Some(format!("waiting for a holder to come back ({last})")),
        );
        ctx.pause(REFRESH_NO_HOLDERS * 2).await?;
    };
    row.size = size;
    row.meta = meta;
    let saved = row.clone();
    ctx.store(move |s| s.put_download(&saved)).await?;
    Ok(row)
}

/// The size and the piece list or manifest from this node's own index, if it shares the id.
async fn local_meta(ctx: &Context, target: &Target) -> Option<(u64, Vec<u8>)> {
    let (db, root, id, kind) = (
        ctx.index.db().clone(),
        ctx.index.root_key(),
        target.id,
        target.kind,
    );
    blocking(move || -> Option<(u64, Vec<u8>)> {
        let store = db.get().ok()?;
        match kind {
            Kind::File => {
                let row = store.shared_file(&root, &id).ok()??;
                Plan::file(id, row.stamp.size, &row.pieces).ok()?;
                Some((row.stamp.size, row.pieces))
            }
            Kind::Dir => {
                let path = store.shared_dir(&root, &id).ok()??;
                let entries = store.entries_below(&root, &path).ok()?;
                let (encoded, size, _) = share::manifest::encode_below(&entries, &path);
                Plan::dir(id, &encoded).ok()?;
                Some((size, encoded))
            }
        }
    })
    .await
}

/// The peers that hold `id`, as the leader knows them, without this node.
async fn holders(
    net: &NetworkClient,
    leader: &LeaderHandle,
    id: &Id,
) -> Result<Vec<PeerId>, String> {
    let request = search::Request::Locate {
        prefix: id.to_hex().to_string(),
        max: 1,
    };
    let answer = leader::ask::ask(net, leader, request, leader::ask::ASK_DEADLINE)
        .await
        .map_err(|e| e.to_string())?;
    let me = net.local_peer_id();
    Ok(answer
        .results
        .hits
        .into_iter()
        .filter(|h| h.id == *id)
        .flat_map(|h| h.holders)
        .filter_map(|p| p.parse::<PeerId>().ok())
        .filter(|p| *p != me)
        .collect())
}

/// Why a holder's piece list or manifest cannot be used.
enum MetaError {
    /// This peer failed or sent something else: another holder may do better.
    Peer(String),
    /// The manifest hashes to the id but cannot become a plan: no holder can do better.
    Unusable(String),
}

impl From<String> for MetaError {
    fn from(e: String) -> Self {
        Self::Peer(e)
    }
}

/// A file's size and piece list, or a directory's size and whole manifest, from `peer`,
/// checked against the id.
async fn fetch_meta(
    ctx: &Context,
    peer: PeerId,
    target: &Target,
) -> Result<(u64, Vec<u8>), MetaError> {
    let wire_id = Id(*target.id.as_bytes());
    match target.kind {
        Kind::File => {
            let (size, pieces) = piece_list(ctx, peer, wire_id).await?;
            Plan::file(target.id, size, &pieces).map_err(|e| e.to_string())?;
            Ok((size, pieces))
        }
        Kind::Dir => {
            let mut manifest = Vec::new();
            loop {
                let request = content::Request::Manifest {
                    id: wire_id,
                    offset: manifest.len() as u64,
                };
                let response = ctx
                    .net
                    .content(peer, request)
                    .await
                    .map_err(|e| e.to_string())?;
                response.check()?;
                match response {
                    content::Response::Manifest {
                        total,
                        offset,
                        bytes,
                    } if offset == manifest.len() as u64 => {
                        manifest.extend_from_slice(&bytes);
                        if manifest.len() as u64 >= total {
                            break;
                        }
                        if bytes.is_empty() {
                            return Err(MetaError::Peer("an empty manifest page".into()));
                        }
                    }
                    other => return Err(describe(&other).into()),
                }
            }
            let plan = match Plan::dir(target.id, &manifest) {
                Ok(plan) => plan,
                Err(e @ units::PlanError::BadManifest(_)) => {
                    return Err(MetaError::Unusable(e.to_string()))
                }
                Err(e) => return Err(MetaError::Peer(e.to_string())),
            };
            Ok((plan.total_bytes(), manifest))
        }
    }
}

/// A file's size and piece list from `peer` (not yet checked against the id).
async fn piece_list(ctx: &Context, peer: PeerId, id: Id) -> Result<(u64, Vec<u8>), String> {
    let response = ctx
        .net
        .content(peer, content::Request::Pieces { id })
        .await
        .map_err(|e| e.to_string())?;
    response.check()?;
    match response {
        content::Response::Pieces { size, pieces, .. } => Ok((size, pieces.0)),
        other => Err(describe(&other)),
    }
}

fn describe(response: &content::Response) -> String {
    match response {
        content::Response::NotFound => "does not share it (any more)".into(),
        content::Response::Busy => "busy".into(),
        content::Response::Refused { reason } => format!("refused: {reason}"),
        _ => "an unexpected answer".into(),
    }
}

/// Step 2 (blocking): creates the partial tree's directories and empty files and returns which
/// units are done: those the saved bitfield says, plus those found intact in files already
/// there. Other files are created when their first piece arrives (`fetch::Files`).
fn set_up(plan: &Plan, part: &Path, mut done: Vec<bool>) -> std::io::Result<Vec<bool>> {
    if plan.is_dir {
        std::fs::create_dir_all(part)?;
        let mut made = HashSet::new();
        let parents = plan.files.iter().flat_map(|f| &f.paths).filter_map(|p| {
            let path = scan::native(part, p);
            path.parent().map(Path::to_path_buf)
        });
        for dir in plan
            .dirs
            .iter()
            .map(|d| scan::native(part, d))
            .chain(parents)
        {
            if made.insert(dir.clone()) {
                std::fs::create_dir_all(&dir)?;
            }
        }
    }
    let mut absent = vec![false; plan.files.len()];
    for (i, absent) in absent.iter_mut().enumerate() {
        let path = plan.data_path(part, i);
        let len = plan.files[i].layout.len();
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {
                if meta.len() != len {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)?
                        .set_len(len)?;
                }
            }
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} is in the way", path.display()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if len == 0 {
                    File::create(&path)?;
                } else {
                    *absent = true;
                    // Saved bits of a file that is gone mean nothing.
                    for u in plan.units_of(i) {
                        done[u] = false;
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    recheck(plan, part, &mut done, &absent);
    Ok(done)
}

/// Verifies, from disk, every unit not marked done whose file's piece list is known, and marks
/// the intact ones done.
fn recheck(plan: &Plan, part: &Path, done: &mut [bool], skip: &[bool]) {
    let mut buf = Vec::new();
    for (i, f) in plan.files.iter().enumerate() {
        if f.pieces.is_none() || skip.get(i) == Some(&true) {
            continue;
        }
        let units = plan.units_of(i);
        if units.clone().all(|u| done[u]) {
            continue;
        }
        let Ok(file) = File::open(plan.data_path(part, i)) else {
            continue;
        };
        for u in units {
            if done[u] {
                continue;
            }
            let r = plan.unit(u);
            buf.resize(r.len as usize, 0);
            if fsio::read_exact_at(&file, &mut buf, r.offset).is_ok() && plan.verify(u, &buf) {
                done[u] = true;
            }
        }
    }
}

/// Copies every distinct file this node shares itself into the partial tree and marks its units
/// done (step 4 verifies the copies like everything else).
async fn copy_local(ctx: &Context, plan: &Plan, part: &Path, done: &mut [bool]) {
    let missing: Vec<(usize, [u8; 32])> = (0..plan.files.len())
        .filter(|&i| plan.units_of(i).any(|u| !done[u]))
        .map(|i| (i, *plan.files[i].id.as_bytes()))
        .collect();
    if missing.is_empty() {
        return;
    }
    let index = ctx.index.clone();
    let targets: Vec<PathBuf> = missing
        .iter()
        .map(|(i, _)| plan.data_path(part, *i))
        .collect();
    let copied = blocking(move || -> Vec<(usize, u64)> {
        let Ok(store) = index.db().get() else {
            return Vec::new();
        };
        let root = index.root_key();
        let mut copied = Vec::new();
        for ((i, id), target) in missing.into_iter().zip(targets) {
            // What this node would serve: indexed here and unchanged on disk.
            // Copied from the verified open file, never from the path again; the length is
            // counted here (some platforms report 0 from `fs::copy`).
            let Ok((row, _, mut source)) = serve::shared_file(&index, &store, &root, &Id(id))
            else {
                continue;
            };
            let mut copy = || -> std::io::Result<u64> {
                let mut out = std::fs::File::create(&target)?;
                let n = std::io::copy(
                    &mut std::io::Read::take(&mut source, row.stamp.size),
                    &mut out,
                )?;
                Ok(n)
            };
            if copy().is_ok_and(|n| n == row.stamp.size) {
                copied.push((i, row.stamp.size));
            }
        }
        copied
    })
    .await;
    let mut bytes = 0;
    for (i, size) in copied {
        bytes += size;
        for u in plan.units_of(i) {
            done[u] = true;
        }
    }
    if bytes > 0 {
        tracing::info!(
            bytes,
            "copied content this node shares instead of fetching it"
        );
        ctx.update(|p| p.bytes_local += bytes);
    }
}

/// Fetches the piece lists of the directory's multi-piece files that are not complete.
async fn fetch_piece_lists(
    ctx: &Context,
    id: &Id,
    plan: &mut Plan,
    done: &[bool],
) -> Result<(), Stop> {
    loop {
        let needed: Vec<usize> = (0..plan.files.len())
            .filter(|&i| plan.files[i].needs_pieces() && plan.units_of(i).any(|u| !done[u]))
            .collect();
        if needed.is_empty() {
            return Ok(());
        }
        ctx.set_state(
            DownloadState::Starting,
            Some(format!(
                "fetching the piece lists of {} files",
                needed.len()
            )),
        );
        let holders = holders(&ctx.net, &ctx.leader, id).await.unwrap_or_default();
        for i in needed {
            let id = plan.files[i].id;
            for &peer in &holders {
                if let Ok((size, bytes)) = piece_list(ctx, peer, Id(*id.as_bytes())).await {
                    if let Ok(p) = Plan::file(id, size, &bytes) {
                        if size == plan.files[i].layout.len() {
                            plan.files[i].pieces = p.files[0].pieces.clone();
                            break;
                        }
                    }
                }
            }
        }
        if plan.files.iter().any(|f| f.needs_pieces()) {
            ctx.set_state(
                DownloadState::Waiting,
                Some("waiting for a holder to give the piece lists".into()),
            );
            ctx.pause(REFRESH_NO_HOLDERS * 2).await?;
        } else {
            return Ok(());
        }
    }
}

struct PeerTask {
    jobs: mpsc::Sender<Job>,
}

/// Step 3: fetches every unit not done yet; returns when all are done.
async fn fetch_all(
    ctx: &Context,
    row: &DownloadRow,
    plan: Arc<Plan>,
    part: &Path,
    done: &[bool],
) -> Result<(), Stop> {
    let id = row.id;
    let config = scheduler::Config {
        max_window_units: fetch::MAX_IN_FLIGHT,
        ..Default::default()
    };
    let mut planner: Planner<PeerId> = Planner::new(plan.unit_lens.clone(), done, config);
    let files = Arc::new(Files::new(part.to_path_buf(), plan.clone()));
    let (events_tx, mut events) = mpsc::channel::<Event>(1024);
    let mut peers: HashMap<PeerId, PeerTask> = HashMap::new();
    let mut banned: HashSet<PeerId> = HashSet::new();
    let mut resting: HashMap<PeerId, Instant> = HashMap::new();
    let mut files_done = (0..plan.files.len())
        .filter(|&i| plan.units_of(i).all(|u| planner.is_done_unit(u)))
        .count() as u64;
    let mut next_refresh = Instant::now();
    let mut last_save = Instant::now();
    let mut dirty = false;
    let mut paused_until: Option<(Instant, String)> = None;
    let mut rate = RateMeter::default();
    let mut fetched: u64 = ctx.progress.borrow().bytes_fetched;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut holders_known = 0usize;
    let mut lookup: Option<tokio::task::JoinHandle<Result<Vec<PeerId>, String>>> = None;
    let started = Instant::now() - Duration::from_millis(ctx.progress.borrow().elapsed_ms);

    while !planner.is_done() {
        let now = Instant::now();
        if lookup.is_none() && now >= next_refresh {
            // Asked off the loop: an election can make the leader take seconds to answer.
            let (net, leader) = (ctx.net.clone(), ctx.leader.clone());
            lookup = Some(tokio::spawn(
                async move { holders(&net, &leader, &id).await },
            ));
        }
        if paused_until
            .as_ref()
            .is_some_and(|(until, _)| *until <= now)
        {
            paused_until = None;
        }
        if paused_until.is_none() {
            for (peer, task) in &peers {
                while task.jobs.capacity() > 0 {
                    let Some(unit) = planner.next(*peer, now) else {
                        break;
                    };
                    if task.jobs.try_send(Job { unit }).is_err() {
                        planner.failed(*peer, unit);
                        break;
                    }
                }
            }
        }
        // Progress.
        let (state, message) = if let Some((_, why)) = &paused_until {
            (DownloadState::Waiting, Some(why.clone()))
        } else if peers.is_empty() {
            (
                DownloadState::Waiting,
                Some(if holders_known == 0 {
                    "no node holding it is reachable; waiting for one to come back".to_string()
                } else {
                    "its holders cannot serve it now; trying again".to_string()
                }),
            )
        } else {
            (DownloadState::Fetching, None)
        };
        ctx.update(|p| {
            p.elapsed_ms = started.elapsed().as_millis() as u64;
            p.state = state;
            p.message = message;
            p.bytes_done = planner.done_bytes();
            p.files_done = files_done;
            p.peers = peers.len() as u32;
            p.rate = rate.rate();
            p.bytes_fetched = fetched;
            p.write_error = paused_until.as_ref().map(|(_, why)| why.clone());
        });

        tokio::select! {
            _ = ctx.cancel.cancelled() => {
                if let Some(l) = lookup.take() {
                    l.abort();
                }
                save(ctx, id, &planner).await;
                return Err(Stop::Interrupted);
            }
            found = async { lookup.as_mut().expect("bug: guarded").await }, if lookup.is_some() => {
                lookup = None;
                let now = Instant::now();
                let found = found.unwrap_or_else(|e| Err(e.to_string()));
                resting.retain(|_, until| *until > now);
                holders_known = found.as_ref().map(|h| h.len()).unwrap_or(0);
                for peer in found.unwrap_or_default() {
                    if banned.contains(&peer)
                        || resting.contains_key(&peer)
                        || peers.contains_key(&peer)
                    {
                        continue;
                    }
                    let (tx, rx) = mpsc::channel(fetch::MAX_IN_FLIGHT);
                    tokio::spawn(fetch::run(
                        ctx.net.clone(),
                        peer,
                        plan.clone(),
                        files.clone(),
                        rx,
                        events_tx.clone(),
                    ));
                    planner.add_peer(peer, now);
                    peers.insert(peer, PeerTask { jobs: tx });
                    tracing::debug!(%peer, id = %id, "fetching from a holder");
                }
                next_refresh = now
                    + if peers.is_empty() {
                        REFRESH_NO_HOLDERS
                    } else {
                        REFRESH_HOLDERS
                    };
            }
            event = events.recv() => {
                let event = event.expect("bug: we hold a sender");
                let now = Instant::now();
                match event {
                    Event::Done { peer, unit } => {
                        let len = plan.unit_lens[unit];
                        fetched += len;
                        if let Completed::Accepted { .. } = planner.completed(peer, unit, now) {
                            dirty = true;
                            rate.add(now, len);
                            let file = plan.unit(unit).file;
                            if plan.units_of(file).all(|u| planner.is_done_unit(u)) {
                                files.close(file);
                                files_done += 1;
                            }
                        }
                    }
                    Event::Bad { peer, unit } => {
                        tracing::warn!(%peer, unit, id = %id, "a holder sent data that does not verify; dropping it for this download");
                        banned.insert(peer);
                        planner.ban(peer);
                        peers.remove(&peer);
                    }
                    Event::Refused { peer, unit, status } => {
                        planner.failed(peer, unit);
                        if matches!(status, Status::NotFound | Status::Unavailable) {
                            tracing::debug!(%peer, ?status, "holder cannot serve it; leaving it alone for a while");
                            planner.remove_peer(peer);
                            peers.remove(&peer);
                            resting.insert(peer, now + REFRESH_HOLDERS * 2);
                        }
                    }
                    Event::WriteFailed { peer, unit, error } => {
                        planner.failed(peer, unit);
                        let why = format!("cannot write to {}: {error}; what was fetched is kept, and the download goes on by itself once that is fixed (e.g. space is freed)", part.display());
                        if paused_until.is_none() {
                            tracing::warn!(%why, "download paused");
                        }
                        paused_until = Some((now + WRITE_PAUSE, why));
                    }
                    Event::Gone { peer, error } => {
                        tracing::debug!(%peer, %error, "holder stream ended");
                        planner.remove_peer(peer);
                        peers.remove(&peer);
                        resting.insert(peer, now + RETRY_PEER);
                        next_refresh = next_refresh.min(now + RETRY_PEER);
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for (peer, units) in planner.check_stalls(now) {
                    tracing::debug!(%peer, units = units.len(), "holder stalled; its pieces go to the others");
                }
                if dirty && now.duration_since(last_save) >= SAVE_EVERY {
                    save(ctx, id, &planner).await;
                    dirty = false;
                    last_save = now;
                }
            }
        }
    }
    if let Some(l) = lookup.take() {
        l.abort();
    }
    save(ctx, id, &planner).await;
    files.close_all();
    ctx.update(|p| {
        p.bytes_fetched = fetched;
        p.bytes_done = planner.done_bytes();
    });
    Ok(())
}

/// Saves the bitfield (errors are logged: the next save or a recheck makes up for it).
async fn save(ctx: &Context, key: Id, planner: &Planner<PeerId>) {
    let bits = units::bitfield((0..planner.total_units()).map(|u| planner.is_done_unit(u)));
    if let Err(Stop::Failed(e)) = ctx.store(move |s| s.set_download_done(&key, &bits)).await {
        tracing::warn!(error = %e, "cannot save download progress");
    }
}

/// Step 4 (blocking): hashes every distinct file from disk; returns the ones that do not match.
fn verify_all(plan: &Plan, part: &Path) -> Vec<usize> {
    (0..plan.files.len())
        .filter(|&i| {
            let path = plan.data_path(part, i);
            !share::hasher::hash_file(&path).is_ok_and(|h| h.id == plan.files[i].id)
        })
        .collect()
}

/// Bytes per second over the last few seconds.
#[derive(Default)]
struct RateMeter {
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    const WINDOW: Duration = Duration::from_secs(3);

    fn add(&mut self, now: Instant, bytes: u64) {
        self.samples.push_back((now, bytes));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Self::WINDOW)
        {
            self.samples.pop_front();
        }
    }

    fn rate(&self) -> u64 {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return 0;
        };
        let span = last.0.duration_since(first.0).as_secs_f64().max(0.2);
        let bytes: u64 = self.samples.iter().map(|(_, b)| b).sum();
        (bytes as f64 / span) as u64
    }
}
