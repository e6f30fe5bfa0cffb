//! Serving: piece lists and manifests (`/iwant/content/1.0.0`) and pieces (`/iwant/chunk/1`)
//! to peers that download from this node.
//!
//! Only content that is in the index of the current shared folder, or of the downloads this
//! node offers (`share::Offered`), is served, by id. A file is
//! opened beneath the share root without following a symlink out of it and without blocking
//! ([`fsio::open_beneath`]); then the open file's own metadata (device, inode, size, mtime,
//! ctime) is compared with the index row, and only that open file is read. A file changed or
//! replaced since it was hashed (also by a symlink to a file outside the share, or a FIFO) is
//! not served under its old id (the peer gets `Unavailable`) and the indexer is told to look at
//! it again. Each later request on a stream re-checks the open file the same way.
//!
//! A download in progress serves the pieces it has verified and written, and only those
//! (`share::partial`; when downloads are offered): an id found in no index is looked up among
//! the downloads' partial files, and a piece that is not there yet is answered `Unavailable`
//! (the downloader asks another holder). Its partial file is opened by the path the download
//! task gave, never from a peer's input.
//!
//! Bounds: [`MAX_STREAMS_PER_PEER`] and [`MAX_STREAMS`] chunk streams at once (more are closed
//! at once), [`MAX_CONTENT_JOBS`] content requests at once (more are answered `Busy`), per
//! stream at most [`PREPARED_AHEAD`] requests read and looked up ahead of the one being sent,
//! each with its first piece if it is at most [`READ_AHEAD_MAX`] (further pipelined requests
//! wait in the stream's flow-control window), at most [`chunk::MAX_PIECES_PER_REQUEST`] pieces
//! per request. A stream's slot is never held
//! by a peer that does nothing: no complete request for [`REQUEST_IDLE`], or a frame the peer
//! does not take within [`write_limit`], ends the stream (also when its connection is gone
//! without the stream noticing).

use std::{
    collections::HashMap,
    fs::File,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures::{AsyncWriteExt, StreamExt};
use iwant_behaviours::{
    chunk::{self, Status},
    content,
    wire::{Bytes, Id},
};
use libp2p::{PeerId, Stream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{
    fsio,
    net::{ContentInbound, ContentRpc, NetworkClient},
    share::{self, partial::PartialFile, pieces::Layout, scan, Collection, Offered},
    store::{EntryRow, FileRow, Store},
};

pub use iwant_behaviours::chunk::{MAX_STREAMS, MAX_STREAMS_PER_PEER};
/// Most content requests (piece lists, manifest pages) worked on at once.
pub const MAX_CONTENT_JOBS: usize = 16;

/// How long a chunk stream may wait for its next complete request before it is closed.
pub const REQUEST_IDLE: Duration = Duration::from_secs(10);

/// How long the peer may take to accept a frame of `len` bytes: 10 s, plus 1 s per 256 KiB
/// (a floor of 256 KiB/s, far below any LAN), so a client that stops reading frees its slot.
pub fn write_limit(len: usize) -> Duration {
    Duration::from_secs(10) + Duration::from_secs((len / (256 * 1024)) as u64)
}

/// `f`, or a `TimedOut` error saying `what` took longer than `limit`.
async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} took more than {limit:?}"),
        ))
    })
}

/// What this node has served since it started, and to whom (the last [`SERVED_LOG`] files
/// fetched from it, by peer).
#[derive(Debug, Default)]
pub struct Served {
    bytes: AtomicU64,
    pieces: AtomicU64,
    log: Mutex<std::collections::VecDeque<ServedTo>>,
}

/// How many (peer, file) lines the log of what was served keeps.
pub const SERVED_LOG: usize = 20;

/// [`Served`] as `iwant status --json` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedCounts {
    /// Piece bytes sent to peers.
    pub bytes: u64,
    /// Pieces sent to peers.
    pub pieces: u64,
    /// Who fetched what, most recent first.
    pub recent: Vec<ServedTo>,
}

/// One peer fetching one file from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedTo {
    /// The peer.
    pub peer: PeerId,
    /// The file's name.
    pub file: String,
    /// Bytes of it sent to that peer.
    pub bytes: u64,
    /// When the last of them went out.
    pub last: std::time::SystemTime,
}

impl Served {
    /// The counts now.
    pub fn counts(&self) -> ServedCounts {
        ServedCounts {
            bytes: self.bytes.load(Ordering::Relaxed),
            pieces: self.pieces.load(Ordering::Relaxed),
            recent: self
                .log
                .lock()
                .expect("bug: poisoned")
                .iter()
                .cloned()
                .collect(),
        }
    }

    /// Counts `len` bytes of `file` sent to `peer`; the first of a (peer, file) is logged.
    fn add(&self, peer: PeerId, file: &std::path::Path, len: u64) {
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.pieces.fetch_add(1, Ordering::Relaxed);
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let mut log = self.log.lock().expect("bug: poisoned");
        let now = std::time::SystemTime::now();
        let mut entry = match log.iter().position(|e| e.peer == peer && e.file == name) {
            Some(i) => log.remove(i).expect("bug: index in range"),
            None => {
                // Debug: a folder of 1,000 files would be 1,000 lines; `status` lists them.
                tracing::debug!(peer = %crate::net::short_peer(&peer), file = %name, "a peer is fetching a file from this node");
                ServedTo {
                    peer,
                    file: name.into_owned(),
                    bytes: 0,
                    last: now,
                }
            }
        };
        entry.bytes += len;
        entry.last = now;
        log.push_front(entry);
        log.truncate(SERVED_LOG);
    }
}

/// Runs the server until `shutdown`: answers content requests from `requests` and serves
/// every inbound chunk stream, counting what it sends in `served`.
pub async fn run(
    net: NetworkClient,
    index: Offered,
    mut requests: mpsc::Receiver<ContentInbound>,
    served: Arc<Served>,
    shutdown: CancellationToken,
) {
    let Some(mut streams) = net.accept_chunk_streams() else {
        tracing::error!("chunk streams are already taken; this node cannot serve pieces");
        return;
    };
    let manifests = Arc::new(ManifestCache::default());
    let jobs = Arc::new(Semaphore::new(MAX_CONTENT_JOBS));
    let open = Open::default();
    // Ends a peer's streams when its last connection closes: a stream of a connection that
    // this node closed may otherwise never notice, and would keep its slot.
    let mut departures = net.departures();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            gone = departures.recv() => match gone {
                Ok(peer) => StreamGuard::end_all(&open, peer),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            request = requests.recv() => {
                let Some(ContentInbound { peer, request, channel }) = request else { return };
                let Ok(permit) = jobs.clone().try_acquire_owned() else {
                    net.respond::<ContentRpc>(channel, content::Response::Busy, None).await;
                    continue;
                };
                let (net, index, manifests) = (net.clone(), index.clone(), manifests.clone());
                tokio::spawn(async move {
                    let response = tokio::task::spawn_blocking(move || {
                        answer_content(&index, &manifests, request)
                    })
                    .await
                    .unwrap_or_else(|_| content::Response::Refused {
                        reason: "internal error".into(),
                    });
                    tracing::debug!(%peer, ?response, "content request answered");
                    net.respond::<ContentRpc>(channel, response, None).await;
                    drop(permit);
                });
            }
            stream = streams.next() => {
                let Some((peer, stream)) = stream else { return };
                let Some(guard) = StreamGuard::take(&open, peer) else {
                    tracing::debug!(%peer, "too many chunk streams; closing one");
                    drop(stream);
                    continue;
                };
                let (index, served) = (index.clone(), served.clone());
                let shutdown = shutdown.clone();
                let gone = guard.gone.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = gone.cancelled() => {
                            tracing::debug!(%peer, "chunk stream ended with its connection");
                        }
                        result = serve_stream(stream, peer, index, &served) => {
                            if let Err(e) = result {
                                tracing::debug!(%peer, error = %e, "chunk stream ended");
                            }
                        }
                    }
                    drop(guard);
                });
            }
        }
    }
}

/// The open chunk streams of each peer that has some.
type Open = Arc<Mutex<HashMap<PeerId, PeerStreams>>>;

struct PeerStreams {
    count: usize,
    /// Cancelled when the peer's last connection closes; the streams opened after that get a
    /// new one.
    gone: CancellationToken,
}

/// Counts a peer's open streams; released on drop.
struct StreamGuard {
    open: Open,
    peer: PeerId,
    /// Cancelled when the stream's peer has left: the stream must end.
    gone: CancellationToken,
}

impl StreamGuard {
    fn take(open: &Open, peer: PeerId) -> Option<Self> {
        let mut map = open.lock().expect("bug: poisoned");
        let total: usize = map.values().map(|p| p.count).sum();
        let mine = map.get(&peer).map_or(0, |p| p.count);
        if mine >= MAX_STREAMS_PER_PEER || total >= MAX_STREAMS {
            return None;
        }
        let entry = map.entry(peer).or_insert_with(|| PeerStreams {
            count: 0,
            gone: CancellationToken::new(),
        });
        entry.count += 1;
        Some(Self {
            open: open.clone(),
            peer,
            gone: entry.gone.clone(),
        })
    }

    /// Ends every stream of `peer` opened so far.
    fn end_all(open: &Open, peer: PeerId) {
        if let Some(p) = open.lock().expect("bug: poisoned").get_mut(&peer) {
            std::mem::take(&mut p.gone).cancel();
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut map = self.open.lock().expect("bug: poisoned");
        if let Some(p) = map.get_mut(&self.peer) {
            p.count -= 1;
            if p.count == 0 {
                map.remove(&self.peer);
            }
        }
    }
}

/// The manifest served last, so paging through it does not rebuild it for every page; the
/// same for attribute records of more than one page.
#[derive(Default)]
struct ManifestCache {
    last: Mutex<Option<(Id, Arc<Vec<u8>>)>>,
    attrs: Mutex<Option<(Id, Arc<Vec<u8>>)>>,
}

fn answer_content(
    index: &Offered,
    manifests: &ManifestCache,
    request: content::Request,
) -> content::Response {
    if let Err(reason) = request.check() {
        return content::Response::Refused { reason };
    }
    let store = match index.db().get() {
        Ok(store) => store,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the index to serve a peer");
            return content::Response::Busy;
        }
    };
    match request {
        content::Request::Pieces { id } => match shared_file(index, &store, &id) {
            Ok(Found { row, .. }) => content::Response::Pieces {
                size: row.stamp.size,
                piece_size: Layout::for_len(row.stamp.size).piece_size(),
                pieces: Bytes(row.pieces),
            },
            Err(_) => match partial(index, &id) {
                Some(f) => content::Response::Pieces {
                    size: f.layout.len(),
                    piece_size: f.layout.piece_size(),
                    pieces: Bytes(f.pieces.clone()),
                },
                None => content::Response::NotFound,
            },
        },
        content::Request::Manifest { id, offset } => {
            let Some(manifest) = index
                .indexes()
                .find_map(|(_, i)| manifest(manifests, &store, &i.root_key(), id))
            else {
                return content::Response::NotFound;
            };
            let total = manifest.len() as u64;
            if offset > total {
                return content::Response::Refused {
                    reason: format!("offset {offset} is past the manifest's end ({total} bytes)"),
                };
            }
            let start = offset as usize;
            let end = (start + content::MAX_MANIFEST_PAGE).min(manifest.len());
            content::Response::Manifest {
                total,
                offset: start as u64,
                bytes: Bytes(manifest[start..end].to_vec()),
            }
        }
        content::Request::List { path, after } => list(index, &store, &path, after.as_deref()),
        content::Request::Attrs { id, first } => {
            let Some(records) = attrs(manifests, index, &store, id) else {
                return content::Response::NotFound;
            };
            let total = (records.len() / content::ATTRS_LEN) as u64;
            if first > total {
                return content::Response::Refused {
                    reason: format!("record {first} is past the last of {total} records"),
                };
            }
            let start = first as usize * content::ATTRS_LEN;
            let end = (start + content::MAX_ATTRS_PAGE * content::ATTRS_LEN).min(records.len());
            content::Response::Attrs {
                total,
                first,
                attrs: Bytes(records[start..end].to_vec()),
            }
        }
    }
}

/// One page of what the shared folder holds at and below `path` (`content::Request::List`):
/// at most [`content::MAX_LIST_PAGE`] entries and [`content::LIST_PAGE_PATHS`] bytes of paths;
/// `NotFound` when nothing is there (or the shared folder is missing).
fn list(index: &Offered, store: &Store, path: &str, after: Option<&str>) -> content::Response {
    let shared = &index.shared;
    if shared.status().root_missing {
        return content::Response::NotFound;
    }
    let (total, rows) =
        match store.list_page(&shared.root_key(), path, after, content::MAX_LIST_PAGE) {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the index to list it for a peer");
                return content::Response::Busy;
            }
        };
    if total == 0 {
        return content::Response::NotFound;
    }
    let mut bytes = 0;
    let mut entries = Vec::new();
    for entry in rows.into_iter().filter_map(share::IndexEntry::of_row) {
        bytes += entry.path.len();
        if !entries.is_empty() && bytes > content::LIST_PAGE_PATHS {
            break;
        }
        entries.push(crate::leader::wire_entry(entry));
    }
    content::Response::List { total, entries }
}

/// The attribute records of `id` as this node offers it (`transfer::attrs`), from the cache
/// while a peer pages through them.
fn attrs(cache: &ManifestCache, index: &Offered, store: &Store, id: Id) -> Option<Arc<Vec<u8>>> {
    if let Some((cached, records)) = &*cache.attrs.lock().expect("bug: poisoned") {
        if *cached == id {
            return Some(records.clone());
        }
    }
    let records = Arc::new(super::attrs::offered(index, store, &id)?);
    if records.len() > content::MAX_ATTRS_PAGE * content::ATTRS_LEN {
        *cache.attrs.lock().expect("bug: poisoned") = Some((id, records.clone()));
    }
    Some(records)
}

/// The manifest of the shared directory `id`, if it is shared and its manifest still hashes
/// to `id` (the index may be mid-change).
fn manifest(cache: &ManifestCache, store: &Store, root: &str, id: Id) -> Option<Arc<Vec<u8>>> {
    if let Some((cached, bytes)) = &*cache.last.lock().expect("bug: poisoned") {
        if *cached == id {
            return Some(bytes.clone());
        }
    }
    let dir = shared_dir(store, root, &id)?;
    if dir.manifest.len() as u64 > content::MAX_MANIFEST {
        return None;
    }
    let bytes = Arc::new(dir.manifest);
    *cache.last.lock().expect("bug: poisoned") = Some((id, bytes.clone()));
    Some(bytes)
}

/// A directory indexed in `root` (a collection's store key), as [`shared_dir`] finds it.
pub(super) struct SharedDir {
    /// Its path relative to the collection's folder.
    pub path: String,
    /// The index rows strictly below it, sorted by path.
    pub rows: Vec<EntryRow>,
    /// Its manifest, built from those rows.
    pub manifest: Vec<u8>,
    /// The total bytes of its files.
    pub size: u64,
}

/// The directory of `root` whose id is `id`, if it is indexed there and its manifest, built
/// from the index now, still hashes to `id` (the index may be mid-change).
pub(super) fn shared_dir(store: &Store, root: &str, id: &Id) -> Option<SharedDir> {
    let path = store.shared_dir(root, id).ok()??;
    let rows = store.entries_below(root, &path).ok()?;
    let (manifest, size, _) = share::manifest::encode_below(&rows, &path);
    (share::manifest::id_of(&manifest) == *id).then_some(SharedDir {
        path,
        rows,
        manifest,
        size,
    })
}

/// A file this node offers with content `id`, found in the index of one of its collections
/// (the shared folder first), opened beneath that collection's folder without following a
/// symlink out of it ([`fsio::open_beneath`]), and whose open file's own metadata (device,
/// inode, size, mtime, ctime) still matches its row. A file that changed or was replaced is
/// reported to its indexer and not served (nor copied by a local download); only the returned
/// open file may be read. Fails with `NotFound` when no offered file has that id,
/// `Unavailable` when the indexed files are not that content any more.
pub(super) fn shared_file(offered: &Offered, store: &Store, id: &Id) -> Result<Found, Status> {
    let mut status = Status::NotFound;
    for (collection, index) in offered.indexes() {
        let root = index.root_key();
        let Some(row) = store.shared_file(&root, id).ok().flatten() else {
            continue;
        };
        let folder = index.root();
        let path = scan::native(&folder, &row.path);
        match fsio::open_beneath(&folder, &row.path) {
            Ok(file) if unchanged(&file, &row) => {
                return Ok(Found {
                    row,
                    path,
                    file,
                    collection,
                    root,
                })
            }
            _ => {
                index.recheck(path);
                status = Status::Unavailable;
            }
        }
    }
    Err(status)
}

/// An offered file found by [`shared_file`].
pub(super) struct Found {
    /// Its index row.
    pub row: FileRow,
    /// Its path on disk.
    pub path: PathBuf,
    /// The open file, checked against the row.
    pub file: File,
    /// The collection it was found in.
    pub collection: Collection,
    /// That collection's store key (its folder) when it was found.
    pub root: String,
}

/// Whether the open `file` is still the version of the file that `row` indexed.
fn unchanged(file: &File, row: &FileRow) -> bool {
    match file.metadata() {
        Ok(meta) => meta.is_file() && scan::Stamp::of(&meta) == row.stamp,
        Err(_) => false,
    }
}

/// The file of a download in progress with content `id`, if downloads are offered.
fn partial(offered: &Offered, id: &Id) -> Option<Arc<PartialFile>> {
    offered.downloads.as_ref()?.partial.get(id)
}

/// A file being served on one stream.
struct Serving {
    id: Id,
    source: Source,
    path: PathBuf,
    file: File,
    layout: Layout,
}

/// Where a served file comes from.
enum Source {
    /// An offered file: the collection it was found in, that collection's folder (store key)
    /// then, and its row.
    Offered {
        collection: Collection,
        root: String,
        row: FileRow,
    },
    /// A download in progress: only the pieces it has.
    Partial(Arc<PartialFile>),
}

/// Requests of one stream prepared (looked up, first piece read) while earlier ones are
/// being sent: the lookups of many small files overlap instead of adding up.
pub const PREPARED_AHEAD: usize = 8;

/// The largest first piece read ahead with its request: larger ones are read when their turn
/// comes, so a stream holds at most [`PREPARED_AHEAD`] × this in pieces read ahead.
pub const READ_AHEAD_MAX: u64 = 256 * 1024;

/// (Blocking) reads piece `index` of `serving` into `buf` after [`chunk::HEADER_LEN`] bytes of
/// room for its frame's header: `OutOfRange` past the end, `Unavailable` for a piece a
/// download in progress does not have yet or a failed read.
fn read_piece(serving: &Serving, index: u32, mut buf: Vec<u8>) -> Result<Vec<u8>, Status> {
    let range = serving
        .layout
        .piece_range(index as u64)
        .ok_or(Status::OutOfRange)?;
    if let Source::Partial(f) = &serving.source {
        if !f.has(index as u64) {
            return Err(Status::Unavailable);
        }
    }
    buf.resize(chunk::HEADER_LEN + (range.end - range.start) as usize, 0);
    fsio::read_exact_at(&serving.file, &mut buf[chunk::HEADER_LEN..], range.start)
        .map_err(|_| Status::Unavailable)?;
    Ok(buf)
}

/// A piece being read on a blocking thread.
type ReadPiece = tokio::task::JoinHandle<Result<Vec<u8>, Status>>;

/// Reads piece `index` of `serving` on a blocking thread.
fn start_read(serving: &Arc<Serving>, index: u32, buf: Vec<u8>) -> ReadPiece {
    let serving = serving.clone();
    tokio::task::spawn_blocking(move || read_piece(&serving, index, buf))
}

/// What a stream's requests share while they are prepared: the file served last (most
/// requests ask for the next pieces of the same file), a store connection, spare buffers.
#[derive(Default)]
struct StreamCache {
    last: Mutex<Option<Arc<Serving>>>,
    store: Mutex<Option<crate::store::Pooled>>,
    buffers: Mutex<Vec<Vec<u8>>>,
}

impl StreamCache {
    fn buffer(&self) -> Vec<u8> {
        self.buffers
            .lock()
            .expect("bug: poisoned")
            .pop()
            .unwrap_or_default()
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut buffers = self.buffers.lock().expect("bug: poisoned");
        if buffers.len() < PREPARED_AHEAD + 2 {
            buffers.push(buf);
        }
    }
}

/// A request, looked up and with its first piece read.
struct Prepared {
    request: chunk::Request,
    /// What serves it, or why nothing does.
    serving: Result<Arc<Serving>, Status>,
    /// Its first piece (unless too large to read ahead), or why it cannot be sent.
    first: Option<Result<Vec<u8>, Status>>,
}

/// (Blocking) looks `request` up and reads its first piece.
fn prepare(index: &Offered, cache: &StreamCache, request: chunk::Request) -> Prepared {
    let previous = cache
        .last
        .lock()
        .expect("bug: poisoned")
        .clone()
        .filter(|s| s.id == request.id);
    let store = cache.store.lock().expect("bug: poisoned").take();
    let store = store.or_else(|| index.db().get().ok());
    let serving = resolve(index, store.as_deref(), previous, request.id);
    if let Some(store) = store {
        *cache.store.lock().expect("bug: poisoned") = Some(store);
    }
    let first = match &serving {
        Ok(s) => {
            *cache.last.lock().expect("bug: poisoned") = Some(s.clone());
            let small = s
                .layout
                .piece_range(request.first as u64)
                .is_none_or(|r| r.end - r.start <= READ_AHEAD_MAX);
            small.then(|| read_piece(s, request.first, cache.buffer()))
        }
        Err(status) => Some(Err(*status)),
    };
    Prepared {
        request,
        serving,
        first,
    }
}

/// When a stream last had nothing to answer, and how many requests it has to answer now.
struct Busy {
    owed: usize,
    since: tokio::time::Instant,
}

/// Answers the requests of one chunk stream strictly in order until the peer closes it.
/// Requests are read and prepared ([`prepare`]: looked up, first piece read, on blocking
/// threads) up to [`PREPARED_AHEAD`] ahead of the one being sent; within a request, the next
/// piece is read while the current one is sent; the stream is flushed when nothing prepared
/// is waiting.
async fn serve_stream(
    stream: Stream,
    peer: PeerId,
    index: Offered,
    served: &Served,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = futures::AsyncReadExt::split(stream);
    let cache = Arc::new(StreamCache::default());
    let busy = Mutex::new(Busy {
        owed: 0,
        since: tokio::time::Instant::now(),
    });
    let (tx, mut rx) = mpsc::channel::<tokio::task::JoinHandle<Prepared>>(PREPARED_AHEAD);
    // Reads requests until the peer closes its side, or sends one that is bad or cut short.
    let reader = async {
        let outcome = loop {
            let request = match next_request(&mut rd, &busy).await {
                Ok(Some(request)) => request,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            busy.lock().expect("bug: poisoned").owed += 1;
            let (index, cache) = (index.clone(), cache.clone());
            let prepared = tokio::task::spawn_blocking(move || prepare(&index, &cache, request));
            if tx.send(prepared).await.is_err() {
                break Ok(());
            }
        };
        drop(tx);
        outcome
    };
    let writer = async {
        while let Some(prepared) = rx.recv().await {
            let prepared = prepared.await.map_err(std::io::Error::other)?;
            let recheck = answer(&mut wr, prepared, &cache, (peer, served)).await?;
            if let Some((collection, path)) = recheck {
                if let Some(i) = index.index(collection) {
                    i.recheck(path);
                }
            }
            if rx.is_empty() {
                within(write_limit(0), "flushing answers", wr.flush()).await?;
            }
            let mut b = busy.lock().expect("bug: poisoned");
            b.owed -= 1;
            b.since = tokio::time::Instant::now();
        }
        within(write_limit(0), "closing the stream", wr.close()).await
    };
    // The requests read before the reader stopped are answered, also when it stopped on a bad
    // or truncated one (then the stream ends after those answers); a writer that fails ends
    // everything at once.
    tokio::pin!(reader, writer);
    let mut read: Option<std::io::Result<()>> = None;
    loop {
        tokio::select! {
            r = &mut reader, if read.is_none() => read = Some(r),
            w = &mut writer => return w.and(read.unwrap_or(Ok(()))),
        }
    }
}

/// The next request on a stream, `None` when the peer closed it. Fails when the peer sent
/// no complete request for [`REQUEST_IDLE`] while nothing was owed to it (the time an answer
/// takes to send is not idle time).
async fn next_request<R: futures::AsyncRead + Unpin>(
    rd: &mut R,
    busy: &Mutex<Busy>,
) -> std::io::Result<Option<chunk::Request>> {
    let read = chunk::read_request(rd);
    tokio::pin!(read);
    loop {
        let until = {
            let b = busy.lock().expect("bug: poisoned");
            if b.owed > 0 {
                tokio::time::Instant::now() + REQUEST_IDLE
            } else {
                b.since + REQUEST_IDLE
            }
        };
        match tokio::time::timeout_at(until, &mut read).await {
            Ok(request) => return request,
            Err(_) => {
                let b = busy.lock().expect("bug: poisoned");
                if b.owed == 0 && b.since + REQUEST_IDLE <= tokio::time::Instant::now() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("waiting for a request took more than {REQUEST_IDLE:?}"),
                    ));
                }
            }
        }
    }
}

/// Sends the answer to one prepared request: its pieces (the next one read while the current
/// one is sent), ended early by one error frame. Returns the offered file to look at again
/// when it could not be read.
async fn answer<W: futures::AsyncWrite + Unpin>(
    wr: &mut W,
    prepared: Prepared,
    cache: &StreamCache,
    (peer, served): (PeerId, &Served),
) -> std::io::Result<Option<(Collection, PathBuf)>> {
    let Prepared {
        request,
        serving,
        first,
    } = prepared;
    let serving = match serving {
        Ok(serving) => serving,
        Err(status) => {
            within(write_limit(0), "sending an error frame", async {
                chunk::write_error(wr, status, request.first).await
            })
            .await?;
            return Ok(None);
        }
    };
    let end = request.first + request.count;
    let mut status = Status::Ok;
    let mut failed_at = request.first;
    let mut current = match first {
        Some(first) => first,
        None => start_read(&serving, request.first, cache.buffer())
            .await
            .map_err(std::io::Error::other)?,
    };
    let mut next: Option<ReadPiece> = None;
    for piece in request.first..end {
        let mut frame = match current {
            Ok(frame) => frame,
            Err(refused) => {
                status = refused;
                failed_at = piece;
                break;
            }
        };
        if piece + 1 < end {
            next = Some(start_read(&serving, piece + 1, cache.buffer()));
        }
        within(
            write_limit(frame.len()),
            "sending a piece",
            chunk::write_piece_frame(wr, piece, &mut frame),
        )
        .await?;
        let len = frame.len() - chunk::HEADER_LEN;
        served.add(peer, &serving.path, len as u64);
        cache.give_back(frame);
        current = match next.take() {
            Some(reading) => reading.await.map_err(std::io::Error::other)?,
            None => Err(Status::OutOfRange),
        };
    }
    if status != Status::Ok {
        within(
            write_limit(0),
            "sending an error frame",
            chunk::write_error(wr, status, failed_at),
        )
        .await?;
    }
    // A file that could not be read goes back to its indexer and is looked up afresh next
    // time; a piece a download does not have yet is no fault of its file.
    match &serving.source {
        Source::Offered { collection, .. } if status == Status::Unavailable => {
            let mut last = cache.last.lock().expect("bug: poisoned");
            if last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &serving)) {
                *last = None;
            }
            Ok(Some((*collection, serving.path.clone())))
        }
        _ => Ok(None),
    }
}

/// Finds what to serve for `id`: the file served last on this stream if it is `id`, its
/// collection is still in the same folder and its open file still has the stamp of its row
/// (`fstat`, not the path: what is read is what was checked), or a fresh lookup in the index,
/// or else among the downloads in progress. An id that is not offered is `NotFound`; an
/// indexed file that cannot be opened beneath the share or no longer matches its row is
/// `Unavailable` (and goes back to the indexer).
fn resolve(
    index: &Offered,
    store: Option<&Store>,
    previous: Option<Arc<Serving>>,
    id: Id,
) -> Result<Arc<Serving>, Status> {
    if let Some(prev) = previous {
        match &prev.source {
            Source::Offered {
                collection,
                root,
                row,
            } => {
                let collection = index.index(*collection);
                if collection.is_some_and(|c| c.root_key() == *root) && unchanged(&prev.file, row) {
                    return Ok(prev);
                }
                if let Some(c) = collection {
                    c.recheck(prev.path.clone());
                }
            }
            // Still the download in progress that was open (it has not ended since).
            Source::Partial(f) => {
                if partial(index, &id).is_some_and(|now| Arc::ptr_eq(&now, f)) {
                    return Ok(prev);
                }
            }
        }
    }
    let store = store.ok_or(Status::Busy)?;
    match shared_file(index, store, &id) {
        Ok(found) => Ok(Arc::new(Serving {
            id,
            layout: Layout::for_len(found.row.stamp.size),
            path: found.path,
            file: found.file,
            source: Source::Offered {
                collection: found.collection,
                root: found.root,
                row: found.row,
            },
        })),
        Err(status) => {
            let f = partial(index, &id).ok_or(status)?;
            let (file, _) = fsio::open_regular(&f.path).map_err(|_| Status::Unavailable)?;
            Ok(Arc::new(Serving {
                id,
                layout: f.layout,
                path: f.path.clone(),
                file,
                source: Source::Partial(f),
            }))
        }
    }
}
