//! The fetch phase's work on the network and the disk: one fetcher per holder, a
//! `/iwant/chunk/1` stream on which units are requested back to back (pipelined, as many as the
//! planner's window for the peer allows), every piece verified on arrival and written at its
//! offset in its partial file off the async threads. [`run`] drives the phase's state machine
//! ([`Fetch`]) with these.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
};

use futures::{AsyncReadExt, AsyncWriteExt};
use iwant_behaviours::{
    chunk::{self, Status},
    id::Id,
};
use libp2p::PeerId;
use tokio::sync::{mpsc, Semaphore};

use super::{
    fetch::{self, Fetch, FetchIo, Shape},
    Context, Stop, Work,
};
use crate::{
    fsio,
    net::NetworkClient,
    share::partial::{PartialFile, Partials},
    transfer::units::{self, Plan},
};

/// Most units one peer may have requested and unanswered (the planner's window stays below).
pub const MAX_IN_FLIGHT: usize = 64;

/// Pieces of one peer being verified and written at once, while its stream reads on.
const WRITES_AT_ONCE: usize = 4;

/// Pieces up to this long (most often whole small files) are verified and written one after
/// the other by one thread per peer, which costs less per piece than a task each.
const SMALL_PIECE: u64 = 64 * 1024;

/// What a fetcher reports to its download.
#[derive(Debug)]
pub enum Event<P = PeerId> {
    /// Unit `unit` arrived from `peer`, verified, and is written.
    Done {
        /// The peer.
        peer: P,
        /// The unit.
        unit: usize,
    },
    /// The peer sent data that does not verify.
    Bad {
        /// The peer.
        peer: P,
        /// The unit.
        unit: usize,
    },
    /// The peer could not serve the unit.
    Refused {
        /// The peer.
        peer: P,
        /// The unit.
        unit: usize,
        /// What it said.
        status: Status,
    },
    /// Writing a verified unit failed (a full disk, a removed download folder).
    WriteFailed {
        /// The peer it came from.
        peer: P,
        /// The unit.
        unit: usize,
        /// Why.
        error: std::io::Error,
    },
    /// The stream to the peer failed or could not be opened; every unit it had is lost.
    Gone {
        /// The peer.
        peer: P,
        /// Why.
        error: String,
    },
}

/// Open partial files, shared by a download's fetchers.
pub struct Files {
    part: PathBuf,
    plan: Arc<Plan>,
    open: Mutex<HashMap<usize, Arc<File>>>,
    /// Set by [`Files::close_all`]: from then on no file is opened, so a late duplicate piece
    /// cannot create a partial file again after the download was moved into place.
    closed: RwLock<bool>,
    /// Held while a piece is written: pieces are verified side by side, but written one at a
    /// time (concurrent writes to one file wait on its inode's lock in the kernel, spinning).
    writing: Mutex<()>,
}

impl Files {
    /// The partial files of `plan` under `part`.
    pub fn new(part: PathBuf, plan: Arc<Plan>) -> Self {
        Self {
            part,
            plan,
            open: Mutex::new(HashMap::new()),
            closed: RwLock::new(false),
            writing: Mutex::new(()),
        }
    }

    /// Distinct file `file`, opened for writing (created if missing; sized if it has several
    /// pieces).
    pub fn get(&self, file: usize) -> std::io::Result<Arc<File>> {
        // Held until the file is open, so that `close_all` waits for opens in progress.
        let closed = self.closed.read().expect("bug: poisoned");
        if *closed {
            return Err(std::io::Error::other(
                "the download has finished fetching; a late piece is dropped",
            ));
        }
        if let Some(f) = self.open.lock().expect("bug: poisoned").get(&file) {
            return Ok(f.clone());
        }
        let path = self.plan.data_path(&self.part, file);
        let f = OpenOptions::new()
            .write(true)
            .read(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        // Files of several pieces are pre-sized, so pieces land anywhere in them; a one-piece
        // file gets its length from its one write (sizing a new file first costs a metadata
        // update per file, which dominates a tree of small files).
        let layout = self.plan.files[file].layout;
        if layout.count() > 1 && f.metadata()?.len() != layout.len() {
            f.set_len(layout.len())?;
        }
        let f = Arc::new(f);
        self.open
            .lock()
            .expect("bug: poisoned")
            .insert(file, f.clone());
        Ok(f)
    }

    /// Closes distinct file `file` (it is complete).
    pub fn close(&self, file: usize) {
        self.open.lock().expect("bug: poisoned").remove(&file);
    }

    /// Closes every file; no file is opened (or created) after this.
    pub fn close_all(&self) {
        *self.closed.write().expect("bug: poisoned") = true;
        self.open.lock().expect("bug: poisoned").clear();
    }
}

/// Checks unit `unit`'s `data` and writes it at its place; says how that went.
fn verify_and_write(plan: &Plan, files: &Files, peer: PeerId, unit: usize, data: &[u8]) -> Event {
    if !plan.verify(unit, data) {
        return Event::Bad { peer, unit };
    }
    let u = plan.unit(unit);
    let written = files.get(u.file).and_then(|f| {
        let _one_at_a_time = files.writing.lock().expect("bug: poisoned");
        fsio::write_all_at(&f, data, u.offset)
    });
    match written {
        Ok(()) => Event::Done { peer, unit },
        Err(error) => Event::WriteFailed { peer, unit, error },
    }
}

/// Adds one request for `group` (consecutive pieces of one file) to `out` and tells the
/// reader.
async fn send_group(
    out: &mut Vec<u8>,
    plan: &Plan,
    sent: &mpsc::Sender<Vec<Job>>,
    group: Vec<Job>,
) -> std::io::Result<()> {
    let u = plan.unit(group[0].unit);
    let request = chunk::Request {
        id: plan.files[u.file].id,
        first: u.piece as u32,
        count: group.len() as u32,
    };
    chunk::encode_request(&request, out)?;
    sent.send(group)
        .await
        .map_err(|_| std::io::Error::other("the reader stopped"))
}

/// Keeps `data` for a later piece, up to a few buffers.
fn give_back(pool: &Mutex<Vec<Vec<u8>>>, data: Vec<u8>) {
    let mut pool = pool.lock().expect("bug: poisoned");
    if pool.len() < WRITES_AT_ONCE + 1 {
        pool.push(data);
    }
}

/// One unit to fetch.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// The unit.
    pub unit: usize,
}

/// Runs the fetch phase of `work` until every unit is done (or the task is stopped).
pub(super) async fn run(ctx: &Context, work: &Work) -> Result<(), Stop> {
    let plan = Arc::new(work.plan.clone());
    let io = Peers {
        net: ctx.net.clone(),
        files: Arc::new(Files::new(work.part.clone(), plan.clone())),
        plan,
        ctx,
    };
    let mut state = Fetch::new(
        Shape::of(&work.plan),
        &work.done,
        &work.part,
        std::time::Instant::now(),
    );
    // Each download takes equally rare pieces in an order of its own.
    state.shuffle(rand::random::<u64>() | 1);
    // Each file is fetched from its own holders too (a folder's files, and downloaders of the
    // same file who have some of it).
    let file_ids: Vec<Id> = work.plan.files.iter().map(|f| f.id).collect();
    if let Some(offered) = &ctx.index.downloads {
        offer_partial(&offered.partial, work);
    }
    let result = fetch::run(
        state,
        work.row.id,
        &file_ids,
        &*ctx.holders,
        &io,
        &ctx.progress,
        &ctx.cancel,
    )
    .await;
    io.files.close_all();
    result
}

/// Offers the files of `work` whose piece lists are known, with the units already done, to
/// other downloaders of the same content (until the download ends: `download::run`).
fn offer_partial(partials: &Partials, work: &Work) {
    let plan = &work.plan;
    let files = (0..plan.files.len())
        .filter_map(|i| {
            let f = &plan.files[i];
            let pieces: Vec<u8> = f.pieces.as_ref()?.iter().flatten().copied().collect();
            Some(PartialFile::new(
                f.id,
                plan.data_path(&work.part, i),
                f.layout,
                pieces,
                plan.units_of(i),
            ))
        })
        .collect();
    partials.register(work.row.id, files);
    partials.update(&work.row.id, &units::bitfield(work.done.iter().copied()));
}

/// The fetch phase's I/O in the node: fetchers on libp2p streams, files on disk, the bitfield
/// in the store.
struct Peers<'a> {
    net: NetworkClient,
    plan: Arc<Plan>,
    files: Arc<Files>,
    ctx: &'a Context,
}

impl FetchIo<PeerId> for Peers<'_> {
    fn connect(&self, peer: PeerId, jobs: mpsc::Receiver<Job>, events: mpsc::Sender<Event>) {
        tokio::spawn(fetch_from(
            self.net.clone(),
            peer,
            self.plan.clone(),
            self.files.clone(),
            jobs,
            events,
        ));
    }

    fn close(&self, file: usize) {
        self.files.close(file);
    }

    async fn save(&self, bits: Vec<u8>) {
        let id = self.ctx.progress.borrow().id;
        if let Some(offered) = &self.ctx.index.downloads {
            offered.partial.update(&id, &bits);
        }
        // Errors are logged: the next save, or a recheck at the next start, makes up for it.
        if let Err(Stop::Failed(e)) = self
            .ctx
            .store(move |s| s.set_download_done(&id, &bits))
            .await
        {
            tracing::warn!(error = %e, "cannot save download progress");
        }
    }
}

/// Runs one peer's fetcher until its job queue closes or its stream fails. Reports on `events`.
async fn fetch_from(
    net: NetworkClient,
    peer: PeerId,
    plan: Arc<Plan>,
    files: Arc<Files>,
    mut jobs: mpsc::Receiver<Job>,
    events: mpsc::Sender<Event>,
) {
    let stream = match net.open_chunk_stream(peer).await {
        Ok(s) => s,
        Err(e) => {
            let _ = events
                .send(Event::Gone {
                    peer,
                    error: e.to_string(),
                })
                .await;
            return;
        }
    };
    let (mut rd, mut wr) = stream.split();
    let (sent_tx, mut sent_rx) = mpsc::channel::<Vec<Job>>(MAX_IN_FLIGHT + 1);
    let writer_plan = plan.clone();
    let writer = async move {
        while let Some(job) = jobs.recv().await {
            // Take every queued job; runs of consecutive pieces of one file become one request.
            let mut queued = vec![job];
            while let Ok(job) = jobs.try_recv() {
                queued.push(job);
            }
            // Every request of the batch goes in one write (one frame down the connection).
            let mut out = Vec::with_capacity(queued.len() * chunk::REQUEST_LEN);
            let mut group: Vec<Job> = Vec::new();
            for job in queued {
                let extends = group.last().is_some_and(|last| {
                    last.unit + 1 == job.unit
                        && writer_plan.unit(last.unit).file == writer_plan.unit(job.unit).file
                        && group.len() < chunk::MAX_PIECES_PER_REQUEST as usize
                });
                if !extends && !group.is_empty() {
                    send_group(&mut out, &writer_plan, &sent_tx, std::mem::take(&mut group))
                        .await?;
                }
                group.push(job);
            }
            if !group.is_empty() {
                send_group(&mut out, &writer_plan, &sent_tx, group).await?;
            }
            wr.write_all(&out).await?;
            wr.flush().await?;
        }
        wr.close().await
    };
    let writes = Arc::new(Semaphore::new(WRITES_AT_ONCE));
    let pool: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let (small_tx, mut small_rx) = mpsc::channel::<(usize, Vec<u8>)>(MAX_IN_FLIGHT);
    {
        let (plan, files, events, pool) =
            (plan.clone(), files.clone(), events.clone(), pool.clone());
        // Ends when the reader is gone and every small piece it passed on is written.
        tokio::task::spawn_blocking(move || {
            while let Some((unit, data)) = small_rx.blocking_recv() {
                let event = verify_and_write(&plan, &files, peer, unit, &data);
                give_back(&pool, data);
                if events.blocking_send(event).is_err() {
                    return;
                }
            }
        });
    }
    let reader_events = events.clone();
    let reader = async move {
        while let Some(group) = sent_rx.recv().await {
            let mut jobs = group.into_iter();
            while let Some(job) = jobs.next() {
                let u = plan.unit(job.unit);
                let header = chunk::read_header(&mut rd).await?;
                if header.status != Status::Ok {
                    // The request's answer ends here: this unit and the rest of the request failed.
                    for job in std::iter::once(job).chain(jobs.by_ref()) {
                        let _ = reader_events
                            .send(Event::Refused {
                                peer,
                                unit: job.unit,
                                status: header.status,
                            })
                            .await;
                    }
                    break;
                }
                if header.index as u64 != u.piece || header.len as u64 != u.len {
                    let _ = reader_events
                        .send(Event::Bad {
                            peer,
                            unit: job.unit,
                        })
                        .await;
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "a piece of the wrong index or length",
                    ));
                }
                // A buffer of an earlier piece, so that no piece pays for zeroing a new one.
                let mut data = pool
                    .lock()
                    .expect("bug: poisoned")
                    .pop()
                    .unwrap_or_default();
                data.resize(u.len as usize, 0);
                rd.read_exact(&mut data).await?;
                if u.len <= SMALL_PIECE {
                    small_tx
                        .send((job.unit, data))
                        .await
                        .map_err(|_| std::io::Error::other("the writer of small pieces stopped"))?;
                    continue;
                }
                let permit = writes
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("bug: semaphore closed");
                let (plan, files, events) = (plan.clone(), files.clone(), reader_events.clone());
                let pool = pool.clone();
                let work = move || -> Event {
                    let event = verify_and_write(&plan, &files, peer, job.unit, &data);
                    give_back(&pool, data);
                    event
                };
                // Verify and write off the async threads while the stream reads on.
                tokio::spawn(async move {
                    let event =
                        tokio::task::spawn_blocking(work)
                            .await
                            .unwrap_or_else(|e| Event::Gone {
                                peer,
                                error: e.to_string(),
                            });
                    let _ = events.send(event).await;
                    drop(permit);
                });
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let outcome = tokio::select! {
        r = writer => r.err(),
        r = reader => r.err(),
    };
    if let Some(e) = outcome {
        let _ = events
            .send(Event::Gone {
                peer,
                error: e.to_string(),
            })
            .await;
    }
}
