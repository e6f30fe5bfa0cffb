//! Step 3, fetch: every unit not done yet, from every holder at once.
//!
//! [`Fetch`] is the phase's state, a plain struct like the [`Planner`] it steers: it does no
//! I/O and never reads the clock. Its driver ([`run`]) feeds it what happens, and carries out
//! the [`Command`]s it queues:
//!
//! - [`Fetch::on_lookup`]: the leader's answer to a [`Command::LookUp`] (the holders of the
//!   content, and of each file: whole holders, and partial ones with the pieces they have);
//!   new holders get a fetcher ([`Command::Connect`]);
//! - [`Fetch::on_event`]: what a fetcher reports (a verified unit, bad data, a refusal, a failed
//!   write, a lost stream);
//! - [`Fetch::on_tick`]: every [`TICK`]: stalls, the throttled save ([`Command::Save`]), the
//!   next lookup, the end of a pause after a failed write;
//! - [`Fetch::next_unit`]: which unit a fetcher with room requests next;
//! - [`Fetch::progress`]: what `iwant get` shows.
//!
//! Holders are looked up every [`REFRESH_HOLDERS`] while there are some, every
//! [`REFRESH_SWARM`] while some are partial (what they have grows), and every
//! [`REFRESH_NO_HOLDERS`] while there are none. A holder that sends data that does not verify
//! is dropped for the rest of the download; one that cannot serve the content rests for
//! [`REST_REFUSED`], one whose stream failed for [`RETRY_PEER`]; a partial holder that does not
//! have a piece after all (its list was old) is not asked for it again until a newer list says
//! it has it. A failed write (a full disk)
//! pauses every request for [`WRITE_PAUSE`] and then tries again; nothing fetched is lost.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fmt::{Debug, Display},
    future::Future,
    hash::Hash,
    ops::Range,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use iwant_behaviours::{chunk::Status, id::Id};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{
    fetcher::{Event, Job, MAX_IN_FLIGHT},
    Holders, Stop,
};
use crate::leader::ask::Holding;
use crate::transfer::{
    scheduler::{self, Completed, Have, Planner},
    units::{self, Plan},
    DownloadState, Progress,
};

/// How often holders are looked up while the download has some.
pub const REFRESH_HOLDERS: Duration = Duration::from_secs(5);
/// How often holders are looked up while some are partial holders.
pub const REFRESH_SWARM: Duration = Duration::from_secs(1);
/// How often holders are looked up while the download has none.
pub const REFRESH_NO_HOLDERS: Duration = Duration::from_secs(1);
/// How long a holder whose stream failed is left alone.
pub const RETRY_PEER: Duration = Duration::from_secs(2);
/// How long a holder that cannot serve the content (not found, unavailable) is left alone.
pub const REST_REFUSED: Duration = Duration::from_secs(10);
/// How often the bitfield is saved, at most.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How long requests pause after a failed write before they go on.
pub const WRITE_PAUSE: Duration = Duration::from_secs(2);
/// How long a download waits, once its holders said they no longer have it and the leader
/// knows no other, before it ends as no longer shared (a holder may share it again).
pub const GIVE_UP_ORPHANED: Duration = Duration::from_secs(20);
/// Why such a download ended.
pub const NO_LONGER_SHARED: &str = "this version is no longer shared by anyone (its holders changed or removed it); search again for the current one";
/// How many of the holders a download fetches from its progress names.
pub const MAX_SOURCES_SHOWN: usize = 8;
/// How often the driver calls [`Fetch::on_tick`].
pub const TICK: Duration = Duration::from_millis(200);

/// What the fetch phase sees of a plan: its units' lengths and each distinct file's units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Unit lengths, in unit order.
    pub lens: Vec<u64>,
    /// The units of each distinct file, in file order, consecutive.
    pub files: Vec<Range<usize>>,
}

impl Shape {
    /// The shape of `plan`.
    pub fn of(plan: &Plan) -> Self {
        Self {
            lens: plan.unit_lens.clone(),
            files: (0..plan.files.len()).map(|f| plan.units_of(f)).collect(),
        }
    }

    fn file_of(&self, unit: usize) -> usize {
        self.files.partition_point(|r| r.end <= unit)
    }
}

/// What [`Fetch`] asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<P> {
    /// Start a fetcher for this holder.
    Connect(P),
    /// Stop this holder's fetcher: it left, sent bad data, or cannot serve the content.
    Disconnect(P),
    /// Ask who holds the content; answer with [`Fetch::on_lookup`].
    LookUp,
    /// Distinct file `.0` is complete: close it.
    Close(usize),
    /// Persist this bitfield of done units.
    Save(Vec<u8>),
}

/// What the fetch phase shows: the fields of [`Progress`] it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchProgress {
    /// Fetching, or waiting (no holder, or a failed write).
    pub state: DownloadState,
    /// Why it waits.
    pub message: Option<String>,
    /// Bytes verified.
    pub bytes_done: u64,
    /// Distinct files complete.
    pub files_done: u64,
    /// Holders it fetches from.
    pub peers: u32,
    /// Who they are (their ids as text, at most [`MAX_SOURCES_SHOWN`]).
    pub from: Vec<String>,
    /// Bytes per second over the last seconds.
    pub rate: u64,
    /// Bytes that arrived in this phase, verified or not.
    pub bytes_fetched: u64,
    /// The failed write it waits on.
    pub write_error: Option<String>,
}

/// When the next lookup of holders goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// At this time.
    Due(Instant),
    /// One is out; its answer comes to [`Fetch::on_lookup`].
    Running,
    /// Never again: the phase stopped.
    Off,
}

/// The state of one download's fetch phase; see the module docs.
#[derive(Debug)]
pub struct Fetch<P> {
    shape: Shape,
    /// Where the data goes, for messages.
    part: PathBuf,
    planner: Planner<P>,
    /// Holders with a running fetcher.
    fetchers: BTreeSet<P>,
    /// Holders that sent bad data: never again in this download.
    banned: BTreeSet<P>,
    /// Holders left alone until the time given.
    resting: BTreeMap<P, Instant>,
    /// How many holders the last lookup found.
    holders_known: usize,
    /// Whether the last lookup found partial holders.
    swarm: bool,
    lookup: Lookup,
    files_done: u64,
    fetched: u64,
    rate: RateMeter,
    /// Requests pause until then, after a failed write; with what failed.
    paused: Option<(Instant, String)>,
    /// Holders that said they do not have the content (not found, or unavailable: changed).
    refused: BTreeSet<P>,
    /// Since when the leader knows no holder, after holders refused.
    orphaned_since: Option<Instant>,
    /// Why the phase gave up, once it did.
    gave_up: Option<String>,
    dirty: bool,
    last_save: Instant,
    stopped: bool,
    commands: VecDeque<Command<P>>,
}

impl<P: Copy + Eq + Hash + Ord + Debug + Display> Fetch<P> {
    /// The fetch phase of a download of `shape` into `part`, with the units in `done` already
    /// verified. Its first command is a lookup, unless every unit is done.
    pub fn new(shape: Shape, done: &[bool], part: &Path, now: Instant) -> Self {
        let config = scheduler::Config {
            max_window_units: MAX_IN_FLIGHT,
            ..Default::default()
        };
        let planner = Planner::new(shape.lens.clone(), done, config);
        let files_done = shape
            .files
            .iter()
            .filter(|r| (*r).clone().all(|u| planner.is_done_unit(u)))
            .count() as u64;
        let complete = planner.is_done();
        Self {
            shape,
            part: part.to_path_buf(),
            planner,
            fetchers: BTreeSet::new(),
            banned: BTreeSet::new(),
            resting: BTreeMap::new(),
            holders_known: 0,
            swarm: false,
            lookup: if complete {
                Lookup::Off
            } else {
                Lookup::Running
            },
            files_done,
            fetched: 0,
            rate: RateMeter::default(),
            paused: None,
            refused: BTreeSet::new(),
            orphaned_since: None,
            gave_up: None,
            dirty: false,
            last_save: now,
            stopped: false,
            commands: if complete {
                VecDeque::new()
            } else {
                VecDeque::from([Command::LookUp])
            },
        }
    }

    /// Orders equally rare units by `seed` (see `scheduler::Config::shuffle`).
    pub fn shuffle(&mut self, seed: u64) {
        self.planner.set_shuffle(seed);
    }

    /// The answer to a [`Command::LookUp`]: the holders of the whole content (this node not
    /// among them), or why there is no answer.
    #[cfg(test)]
    pub fn on_holders(&mut self, found: Result<Vec<P>, String>, now: Instant) {
        self.on_lookup(found, &[], now);
    }

    /// The answer to a [`Command::LookUp`]: the holders of the whole content, and for each
    /// distinct file (in file order; for a single file, the file itself) its whole holders,
    /// who serve its units (folders from every source), and its partial holders, who serve
    /// the pieces their bitfield names (a bitfield of the wrong length is ignored). A holder
    /// of the whole content serves everything; a known holder's units are updated.
    pub fn on_lookup(&mut self, whole: Result<Vec<P>, String>, files: &[Holding<P>], now: Instant) {
        if self.stopped {
            return;
        }
        self.resting.retain(|_, until| *until > now);
        let answered = whole.is_ok();
        let whole = whole.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "cannot look up the holders");
            Vec::new()
        });
        let units = self.shape.lens.len();
        let mut haves: BTreeMap<P, Have> = whole.into_iter().map(|p| (p, Have::All)).collect();
        let mut swarm = false;
        for (file, holding) in files.iter().enumerate().take(self.shape.files.len()) {
            let range = self.shape.files[file].clone();
            // One bit per piece, in as many bytes as that takes: else not this layout.
            let partial = holding
                .partial
                .iter()
                .filter(|(_, bits)| bits.len() == range.len().div_ceil(8))
                .map(|(peer, bits)| (*peer, units::from_bitfield(bits, range.len())));
            let whole = holding
                .whole
                .iter()
                .map(|&peer| (peer, vec![true; range.len()]));
            if range == (0..units) {
                // A single file: its whole holders hold everything.
                for &peer in &holding.whole {
                    haves.insert(peer, Have::All);
                }
            }
            for (peer, has) in whole.chain(partial) {
                let have = haves
                    .entry(peer)
                    .or_insert_with(|| Have::Some(vec![false; units]));
                if let Have::Some(flags) = have {
                    for (unit, has) in range.clone().zip(has) {
                        flags[unit] |= has;
                    }
                }
            }
            swarm |= !holding.partial.is_empty();
        }
        self.swarm = swarm;
        self.holders_known = haves.len();
        // Holders said they no longer have it, and the leader knows nobody else who does.
        if answered && haves.is_empty() && !self.refused.is_empty() {
            self.orphaned_since.get_or_insert(now);
        } else if !haves.is_empty() {
            self.orphaned_since = None;
        }
        for (peer, have) in haves {
            if self.banned.contains(&peer) || self.resting.contains_key(&peer) {
                continue;
            }
            if self.fetchers.contains(&peer) {
                self.planner.add_peer_having(peer, have, now);
                continue;
            }
            // A holder of only files that are complete here has nothing to give.
            if !(0..units).any(|u| have.has(u) && !self.planner.is_done_unit(u)) {
                continue;
            }
            tracing::debug!(%peer, whole = have == Have::All, "fetching from a holder");
            self.planner.add_peer_having(peer, have, now);
            self.fetchers.insert(peer);
            self.commands.push_back(Command::Connect(peer));
        }
        let every = if self.fetchers.is_empty() {
            REFRESH_NO_HOLDERS
        } else if self.swarm {
            REFRESH_SWARM
        } else {
            REFRESH_HOLDERS
        };
        self.lookup = Lookup::Due(now + every);
    }

    /// What a fetcher reported.
    pub fn on_event(&mut self, event: Event<P>, now: Instant) {
        if self.stopped {
            return;
        }
        match event {
            Event::Done { peer, unit } => {
                let Some(&len) = self.shape.lens.get(unit) else {
                    return;
                };
                self.fetched += len;
                if let Completed::Accepted { .. } = self.planner.completed(peer, unit, now) {
                    self.dirty = true;
                    self.rate.add(now, len);
                    let file = self.shape.file_of(unit);
                    if self.shape.files[file]
                        .clone()
                        .all(|u| self.planner.is_done_unit(u))
                    {
                        self.files_done += 1;
                        self.commands.push_back(Command::Close(file));
                    }
                }
            }
            Event::Bad { peer, unit } => {
                tracing::warn!(%peer, unit, "a holder sent data that does not verify; dropping it for this download");
                self.banned.insert(peer);
                self.planner.ban(peer);
                self.disconnect(peer);
            }
            Event::Refused {
                peer,
                unit,
                status: Status::Unavailable,
            } if self.planner.is_partial(peer) => {
                // A partial holder whose list was old: it does not have this piece yet.
                self.planner.lacks(peer, unit);
            }
            Event::Refused { peer, unit, status } => {
                self.planner.failed(peer, unit);
                if matches!(status, Status::NotFound | Status::Unavailable) {
                    tracing::debug!(%peer, ?status, "holder cannot serve it; leaving it alone for a while");
                    self.refused.insert(peer);
                    self.planner.remove_peer(peer);
                    self.disconnect(peer);
                    self.resting.insert(peer, now + REST_REFUSED);
                }
            }
            Event::WriteFailed { peer, unit, error } => {
                self.planner.failed(peer, unit);
                let why = format!(
                    "cannot write to {}: {error}; what was fetched is kept, and the download goes on by itself once that is fixed (e.g. space is freed)",
                    self.part.display()
                );
                if self.paused.is_none() {
                    tracing::warn!(%why, "download paused");
                }
                self.paused = Some((now + WRITE_PAUSE, why));
            }
            Event::Gone { peer, error } => {
                tracing::debug!(%peer, %error, "holder stream ended");
                self.planner.remove_peer(peer);
                self.disconnect(peer);
                self.resting.insert(peer, now + RETRY_PEER);
                if let Lookup::Due(at) = &mut self.lookup {
                    *at = (*at).min(now + RETRY_PEER);
                }
            }
        }
    }

    /// The clock moved on: ends a pause that is over, takes units from stalled holders,
    /// saves if due, looks up holders if due.
    pub fn on_tick(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        if self.paused.as_ref().is_some_and(|(until, _)| *until <= now) {
            self.paused = None;
        }
        for (peer, units) in self.planner.check_stalls(now) {
            tracing::debug!(%peer, units = units.len(), "holder stalled; its pieces go to the others");
        }
        if self.dirty && now.duration_since(self.last_save) >= SAVE_EVERY {
            self.save(now);
        }
        if self.fetchers.is_empty()
            && self
                .orphaned_since
                .is_some_and(|since| now.duration_since(since) >= GIVE_UP_ORPHANED)
        {
            tracing::info!("no node shares this version any more; the download ends");
            self.gave_up = Some(NO_LONGER_SHARED.to_owned());
            self.stop(now);
            return;
        }
        if matches!(self.lookup, Lookup::Due(at) if at <= now) {
            self.lookup = Lookup::Running;
            self.commands.push_back(Command::LookUp);
        }
    }

    /// The next unit `peer`'s fetcher should request, if it has room and there is one.
    pub fn next_unit(&mut self, peer: P, now: Instant) -> Option<usize> {
        if self.stopped || self.paused.as_ref().is_some_and(|(until, _)| *until > now) {
            return None;
        }
        self.planner.next(peer, now)
    }

    /// `unit`, given to `peer` by [`Fetch::next_unit`], could not be sent to its fetcher.
    pub fn unsent(&mut self, peer: P, unit: usize) {
        self.planner.failed(peer, unit);
    }

    /// Ends the phase (every unit is done, or the download is cancelled or stopped): every
    /// fetcher is stopped and the bitfield saved; nothing happens after this.
    pub fn stop(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        for peer in std::mem::take(&mut self.fetchers) {
            self.commands.push_back(Command::Disconnect(peer));
        }
        self.save(now);
        self.lookup = Lookup::Off;
        self.stopped = true;
    }

    /// The next command for the driver.
    pub fn poll_command(&mut self) -> Option<Command<P>> {
        self.commands.pop_front()
    }

    /// Whether every unit is done.
    pub fn is_done(&self) -> bool {
        self.planner.is_done()
    }

    /// Whether [`Fetch::stop`] ended the phase.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Why the phase gave up by itself ([`NO_LONGER_SHARED`]), if it did.
    pub fn gave_up(&self) -> Option<&str> {
        self.gave_up.as_deref()
    }

    /// The done units, as the store keeps them.
    pub fn bitfield(&self) -> Vec<u8> {
        units::bitfield((0..self.planner.total_units()).map(|u| self.planner.is_done_unit(u)))
    }

    /// What the user sees of the phase at `now`.
    pub fn progress(&self, now: Instant) -> FetchProgress {
        let (state, message) = if let Some((_, why)) = &self.paused {
            (DownloadState::Waiting, Some(why.clone()))
        } else if let Some(since) = self.orphaned_since {
            let left = GIVE_UP_ORPHANED.saturating_sub(now.saturating_duration_since(since));
            (
                DownloadState::Waiting,
                Some(format!(
                    "its holders no longer have this version; it ends in {} s unless someone shares it again",
                    left.as_secs()
                )),
            )
        } else if self.fetchers.is_empty() && !self.planner.is_done() {
            let why = if self.holders_known == 0 {
                "no node holding it is reachable; waiting for one to come back"
            } else {
                "its holders cannot serve it now; trying again"
            };
            (DownloadState::Waiting, Some(why.to_string()))
        } else {
            (DownloadState::Fetching, None)
        };
        FetchProgress {
            state,
            message,
            bytes_done: self.planner.done_bytes(),
            files_done: self.files_done,
            peers: self.fetchers.len() as u32,
            from: self
                .fetchers
                .iter()
                .take(MAX_SOURCES_SHOWN)
                .map(|p| p.to_string())
                .collect(),
            rate: self.rate.rate(now),
            bytes_fetched: self.fetched,
            write_error: self.paused.as_ref().map(|(_, why)| why.clone()),
        }
    }

    fn disconnect(&mut self, peer: P) {
        if self.fetchers.remove(&peer) {
            self.commands.push_back(Command::Disconnect(peer));
        }
    }

    fn save(&mut self, now: Instant) {
        self.commands.push_back(Command::Save(self.bitfield()));
        self.dirty = false;
        self.last_save = now;
    }
}

impl FetchProgress {
    /// Writes these fields into `p`; `fetched_before` is what earlier rounds of the phase
    /// fetched (a round after a failed verification adds to them).
    pub fn apply(self, p: &mut Progress, fetched_before: u64) {
        p.state = self.state;
        p.message = self.message;
        p.bytes_done = self.bytes_done;
        p.files_done = self.files_done;
        p.peers = self.peers;
        p.from = self.from;
        p.rate = self.rate;
        p.bytes_fetched = fetched_before + self.bytes_fetched;
        p.write_error = self.write_error;
    }
}

/// What the fetch phase does to the world, besides finding holders.
pub trait FetchIo<P>: Sync {
    /// Starts a fetcher for `peer`: it requests the units that arrive on `jobs` and reports
    /// on `events`, and ends when `jobs` closes.
    fn connect(&self, peer: P, jobs: mpsc::Receiver<Job>, events: mpsc::Sender<Event<P>>);
    /// Distinct file `file` is complete.
    fn close(&self, file: usize);
    /// Persists the bitfield of done units.
    fn save(&self, bits: Vec<u8>) -> impl Future<Output = ()> + Send;
}

/// What a lookup found: the holders of the whole content (or why there is no answer), and of
/// each distinct file.
type LookedUp<P> = (Result<Vec<P>, String>, Vec<Holding<P>>);

/// Runs the fetch phase of `id` until every unit is done (or `cancel` fires), finding holders
/// through `holders` (of `id`, and of each of `file_ids`, the distinct files in file order:
/// those of a folder, or `id` itself for a file), acting through `io`, and showing its
/// progress on `progress`.
pub async fn run<P>(
    mut fetch: Fetch<P>,
    id: Id,
    file_ids: &[Id],
    holders: &dyn Holders<P>,
    io: &impl FetchIo<P>,
    progress: &watch::Sender<Progress>,
    cancel: &CancellationToken,
) -> Result<(), Stop>
where
    P: Copy + Eq + Hash + Ord + Debug + Display + Send + 'static,
{
    let (events_tx, mut events) = mpsc::channel::<Event<P>>(1024);
    let mut jobs: BTreeMap<P, mpsc::Sender<Job>> = BTreeMap::new();
    let mut lookup: Option<tokio::task::JoinHandle<LookedUp<P>>> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (fetched_before, elapsed_before) = {
        let p = progress.borrow();
        (p.bytes_fetched, Duration::from_millis(p.elapsed_ms))
    };
    let started = Instant::now();
    let outcome = loop {
        while let Some(command) = fetch.poll_command() {
            match command {
                Command::Connect(peer) => {
                    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
                    io.connect(peer, rx, events_tx.clone());
                    jobs.insert(peer, tx);
                }
                Command::Disconnect(peer) => {
                    jobs.remove(&peer);
                }
                // Asked off the loop: an election can make the leader take seconds to answer.
                Command::LookUp => {
                    let whole = holders.find(id);
                    let each = (!file_ids.is_empty()).then(|| holders.find_each(file_ids.to_vec()));
                    lookup = Some(tokio::spawn(async move {
                        let whole = whole.await;
                        let files = match each {
                            Some(each) => each.await.unwrap_or_else(|e| {
                                tracing::debug!(error = %e, "cannot look up the holders of the files");
                                Vec::new()
                            }),
                            None => Vec::new(),
                        };
                        (whole, files)
                    }));
                }
                Command::Close(file) => io.close(file),
                Command::Save(bits) => io.save(bits).await,
            }
        }
        if fetch.is_stopped() {
            break if fetch.is_done() {
                Ok(())
            } else if let Some(why) = fetch.gave_up() {
                Err(Stop::Failed(why.to_owned()))
            } else {
                Err(Stop::Interrupted)
            };
        }
        let now = Instant::now();
        if fetch.is_done() {
            fetch.stop(now);
            continue;
        }
        for (&peer, tx) in &jobs {
            while tx.capacity() > 0 {
                let Some(unit) = fetch.next_unit(peer, now) else {
                    break;
                };
                if tx.try_send(Job { unit }).is_err() {
                    fetch.unsent(peer, unit);
                    break;
                }
            }
        }
        progress.send_modify(|p| {
            fetch.progress(now).apply(p, fetched_before);
            p.elapsed_ms = (elapsed_before + started.elapsed()).as_millis() as u64;
        });
        tokio::select! {
            _ = cancel.cancelled() => fetch.stop(Instant::now()),
            found = async { lookup.as_mut().expect("bug: guarded").await }, if lookup.is_some() => {
                lookup = None;
                let (whole, files) = found.unwrap_or_else(|e| (Err(e.to_string()), Vec::new()));
                fetch.on_lookup(whole, &files, Instant::now());
            }
            event = events.recv() => {
                fetch.on_event(event.expect("bug: the loop holds a sender"), Instant::now());
            }
            _ = tick.tick() => fetch.on_tick(Instant::now()),
        }
    };
    if let Some(l) = lookup.take() {
        l.abort();
    }
    if outcome.is_ok() {
        progress.send_modify(|p| fetch.progress(Instant::now()).apply(p, fetched_before));
    }
    outcome
}

/// Bytes per second over the last few seconds: 0 once nothing arrived for that long (a stall,
/// a pause), and over the time since the first byte while that is shorter.
#[derive(Debug, Default)]
struct RateMeter {
    samples: VecDeque<(Instant, u64)>,
    first: Option<Instant>,
}

impl RateMeter {
    const WINDOW: Duration = Duration::from_secs(3);

    fn add(&mut self, now: Instant, bytes: u64) {
        self.first.get_or_insert(now);
        self.samples.push_back((now, bytes));
        self.forget(now);
    }

    fn forget(&mut self, now: Instant) {
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > Self::WINDOW)
        {
            self.samples.pop_front();
        }
    }

    fn rate(&self, now: Instant) -> u64 {
        let Some(first) = self.first else {
            return 0;
        };
        let bytes: u64 = self
            .samples
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= Self::WINDOW)
            .map(|(_, b)| b)
            .sum();
        let span = now
            .saturating_duration_since(first)
            .clamp(Duration::from_millis(200), Self::WINDOW);
        (bytes as f64 / span.as_secs_f64()) as u64
    }
}

#[cfg(test)]
mod tests;
