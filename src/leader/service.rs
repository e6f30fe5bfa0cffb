//! The leader service: while this node leads, it holds every node's index and answers
//! searches.
//!
//! One task ([`Service::run`]) takes the requests: from peers (through the network's inbound
//! queue) and from this node itself (through a [`LeaderHandle`]), in the order they arrive, so a
//! node's pages and deltas apply in order. Index writes and searches run on blocking threads;
//! searches run concurrently (at most [`MAX_SEARCHES`]) under a read lock.
//!
//! Rules:
//! - A node's entries are keyed by its authenticated peer id; a node can only touch its own.
//! - A message that breaks a bound is refused, the sender's entries are dropped and its
//!   connection is closed, with the reason logged.
//! - A full index makes room for a push by dropping the largest nodes' entries, as long as each
//!   is larger than the sender would be (`NetworkIndex::upsert`); they must send a snapshot
//!   again.
//! - A node whose connection is gone keeps its entries for [`GRACE`], so a blip does not empty
//!   the index; then they go.
//! - When this node becomes the leader it starts empty and every node sends it a snapshot;
//!   searches wait until the nodes connected at that moment have sent theirs, or at most
//!   [`WARMUP`], so the first searches after a failover see the whole network; and a search
//!   or lookup that finds nothing while a node that connected less than [`READY_LIMIT`] ago
//!   has not sent its whole index is answered "busy" (the asker asks again).
//! - When this node stops leading, it forgets everything.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use iwant_behaviours::{index_sync, search};
use libp2p::{request_response::ResponseChannel, PeerId};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{
    index::{self, Collection, Limits, NetworkIndex},
    partial::Partials,
};
use crate::net::{IndexRpc, LeaderInbound, LeaderView, NetworkClient, SearchRpc};

/// How long the entries of a node whose connection is gone are kept.
pub const GRACE: Duration = Duration::from_secs(10);

/// Longest a new leader makes searches wait for the connected nodes' snapshots.
pub const WARMUP: Duration = Duration::from_secs(3);

/// How long a node connected to the leader may take to send its index before the leader
/// stops waiting for it: until then, a search or lookup that finds nothing is answered "busy"
/// (try again shortly) instead of "nothing found", so a `get` right after a failover (or a
/// healed partition) asks again until the snapshots on their way are in, instead of failing.
/// Long enough for a node on a saturated slow link, whose index waits behind its own uploads
/// (the soak saw 7 s at 800 kbit/s); within the asker's 12 s (`ask::ASK_DEADLINE`).
pub const READY_LIMIT: Duration = Duration::from_secs(10);

/// Most searches running at once; beyond, the leader answers busy.
pub const MAX_SEARCHES: usize = 16;

/// How many requests from this node may wait for the service.
const LOCAL_QUEUE: usize = 16;

/// How often connected peers are compared with those whose entries are held.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// A handle for this node's own requests to the service (when this node is the leader).
#[derive(Clone, Debug)]
pub struct LeaderHandle {
    tx: mpsc::Sender<Local>,
}

#[derive(Debug)]
enum Local {
    Index {
        request: index_sync::Request,
        reply: oneshot::Sender<index_sync::Response>,
    },
    Search {
        request: search::Request,
        reply: oneshot::Sender<search::Response>,
    },
}

impl LeaderHandle {
    /// Applies this node's own index request, as if it came over the network.
    pub async fn index(&self, request: index_sync::Request) -> Option<index_sync::Response> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Local::Index { request, reply }).await.ok()?;
        rx.await.ok()
    }

    /// Runs a search at this node's service.
    pub async fn search(&self, request: search::Request) -> Option<search::Response> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Local::Search { request, reply }).await.ok()?;
        rx.await.ok()
    }
}

/// Where an answer goes.
enum Responder<T> {
    Net(ResponseChannel<T>),
    Local(oneshot::Sender<T>),
}

/// What the service knows of one node's sync.
#[derive(Default)]
struct PeerSync {
    /// Each collection's sync, by [`Collection::index`].
    colls: [CollSync; 2],
    /// Since when it has not been connected.
    absent_since: Option<Instant>,
}

impl PeerSync {
    /// The version of the node's shared folder the service holds, once a snapshot completed.
    fn shared_version(&self) -> Option<u64> {
        self.colls[Collection::Shared.index()].version
    }
}

/// What the service knows of the sync of one collection of a node.
#[derive(Default)]
struct CollSync {
    /// The version of the collection the service holds, once a snapshot completed.
    version: Option<u64>,
    /// The snapshot under way: session, next page, version.
    snapshot: Option<(u64, u32, u64)>,
}

/// The service task's state.
pub struct Service {
    local: PeerId,
    net: NetworkClient,
    leader: watch::Receiver<LeaderView>,
    inbound: mpsc::Receiver<LeaderInbound>,
    own: mpsc::Receiver<Local>,
    shutdown: CancellationToken,
    leading: bool,
    index: Arc<RwLock<NetworkIndex>>,
    peers: HashMap<PeerId, PeerSync>,
    /// Nodes connected when this node became leader, whose snapshot searches wait for.
    awaited: HashSet<PeerId>,
    /// `true` once searches may run (see [`WARMUP`]).
    warm: watch::Sender<bool>,
    warm_deadline: Instant,
    /// When this leader first saw each connected iwant node (see [`READY_LIMIT`]).
    joined: HashMap<PeerId, Instant>,
    searches: Arc<Semaphore>,
    /// The index's bounds (`config.toml`'s `leader_index_entries`).
    limits: Limits,
    /// The nodes downloading files, and what they have of them.
    partials: Partials,
}

/// Creates the service; run the returned [`Service`] with [`Service::run`].
pub fn spawn(
    net: NetworkClient,
    inbound: mpsc::Receiver<LeaderInbound>,
    limits: Limits,
    shutdown: CancellationToken,
) -> (LeaderHandle, Service) {
    let (tx, own) = mpsc::channel(LOCAL_QUEUE);
    let (warm, _) = watch::channel(false);
    let service = Service {
        local: net.local_peer_id(),
        leader: net.leader_watch(),
        net,
        inbound,
        own,
        shutdown,
        leading: false,
        index: Arc::new(RwLock::new(NetworkIndex::new(limits))),
        peers: HashMap::new(),
        awaited: HashSet::new(),
        warm,
        warm_deadline: Instant::now(),
        joined: HashMap::new(),
        searches: Arc::new(Semaphore::new(MAX_SEARCHES)),
        limits,
        partials: Partials::default(),
    };
    (LeaderHandle { tx }, service)
}

impl Service {
    /// Serves until the shutdown token is cancelled.
    pub async fn run(mut self) {
        let mut reconcile = tokio::time::interval(RECONCILE_INTERVAL);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.on_leader_change().await;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                changed = self.leader.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.on_leader_change().await;
                }
                Some(inbound) = self.inbound.recv() => match inbound {
                    LeaderInbound::Index { peer, request, channel } => {
                        self.on_index(peer, request, Responder::Net(channel)).await;
                    }
                    LeaderInbound::Search { peer, request, channel } => {
                        self.on_search(peer, request, Responder::Net(channel)).await;
                    }
                },
                Some(own) = self.own.recv() => match own {
                    Local::Index { request, reply } => {
                        self.on_index(self.local, request, Responder::Local(reply)).await;
                    }
                    Local::Search { request, reply } => {
                        self.on_search(self.local, request, Responder::Local(reply)).await;
                    }
                },
                _ = reconcile.tick() => self.reconcile().await,
            }
        }
    }

    async fn on_leader_change(&mut self) {
        let leading = self.leader.borrow_and_update().leader == Some(self.local);
        if leading == self.leading {
            return;
        }
        self.leading = leading;
        let dropped = {
            let mut index = self.index.write().expect("bug: poisoned");
            let dropped = index.len();
            *index = NetworkIndex::new(self.limits);
            dropped
        };
        self.peers.clear();
        self.partials = Partials::default();
        self.warm.send_replace(false);
        if leading {
            // Wait for the nodes we know now; the rest join whenever they do.
            self.awaited = (*self.net.iwant_peers()).clone();
            self.awaited.insert(self.local);
            let now = Instant::now();
            self.joined = self.awaited.iter().map(|p| (*p, now)).collect();
            self.warm_deadline = now + WARMUP;
            tracing::info!(
                nodes = self.awaited.len(),
                "leading: collecting every node's index"
            );
        } else {
            self.awaited.clear();
            tracing::info!(
                entries = dropped,
                "no longer leading: network index dropped"
            );
        }
    }

    /// Starts the grace period of nodes that left, drops those whose grace is over, and lets
    /// searches run once warm.
    async fn reconcile(&mut self) {
        if !self.leading {
            return;
        }
        let connected = self.net.iwant_peers();
        let now = Instant::now();
        let mut gone = Vec::new();
        for (peer, sync) in &mut self.peers {
            if *peer == self.local || connected.contains(peer) {
                sync.absent_since = None;
                continue;
            }
            let since = *sync.absent_since.get_or_insert(now);
            if now.duration_since(since) >= GRACE {
                gone.push(*peer);
            }
        }
        for peer in gone {
            self.peers.remove(&peer);
            let removed = self.write(move |index| index.remove_peer(&peer)).await;
            tracing::info!(peer = %crate::net::short_peer(&peer), entries = removed, "node gone; its entries are dropped");
        }
        self.awaited
            .retain(|p| *p == self.local || connected.contains(p));
        let local = self.local;
        self.partials
            .expire(now, |p| *p == local || connected.contains(p));
        self.note_joined(&connected);
        self.update_warm();
    }

    /// Remembers when each of the `connected` nodes was first seen, and forgets those gone.
    fn note_joined(&mut self, connected: &HashSet<PeerId>) {
        let now = Instant::now();
        let local = self.local;
        self.joined
            .retain(|p, _| *p == local || connected.contains(p));
        for p in connected {
            self.joined.entry(*p).or_insert(now);
        }
    }

    /// Whether some connected node joined less than [`READY_LIMIT`] ago and has not sent its
    /// whole index yet: the index may lack what it holds.
    fn still_filling(&self) -> bool {
        let now = Instant::now();
        self.joined.iter().any(|(p, since)| {
            now.duration_since(*since) < READY_LIMIT
                && self
                    .peers
                    .get(p)
                    .is_none_or(|s| s.shared_version().is_none())
        })
    }

    fn update_warm(&mut self) {
        if *self.warm.borrow() || !self.leading {
            return;
        }
        let synced = self.awaited.iter().all(|p| {
            self.peers
                .get(p)
                .is_some_and(|s| s.shared_version().is_some())
        });
        if synced || Instant::now() >= self.warm_deadline {
            if !synced {
                tracing::info!("answering searches before every node's index arrived");
            }
            self.warm.send_replace(true);
        }
    }

    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut NetworkIndex) -> R + Send + 'static,
    ) -> R {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || f(&mut index.write().expect("bug: poisoned")))
            .await
            .expect("bug: index update panicked")
    }

    async fn on_index(
        &mut self,
        peer: PeerId,
        request: index_sync::Request,
        respond: Responder<index_sync::Response>,
    ) {
        let response = self.apply(peer, request).await;
        let evicted = self.write(|index| index.take_evicted()).await;
        for (larger, entries) in evicted {
            tracing::warn!(
                node = %larger,
                entries,
                "the network index is full: dropped the entries of its largest node to make room for a smaller one ({peer}); that node is asked for its index again"
            );
            // Its next push is answered `need_snapshot`; a snapshot that does not fit is
            // refused then.
            self.peers.remove(&larger);
        }
        let refused = matches!(response, index_sync::Response::Refused { .. });
        if let index_sync::Response::Refused { reason } = &response {
            tracing::warn!(%peer, %reason, "index push refused; dropping the node's entries and its connection");
            self.peers.remove(&peer);
            self.write(move |index| index.remove_peer(&peer)).await;
        }
        self.update_warm();
        match respond {
            Responder::Net(channel) if refused => {
                self.net
                    .respond::<IndexRpc>(channel, response, Some(peer))
                    .await
            }
            Responder::Net(channel) => self.net.respond::<IndexRpc>(channel, response, None).await,
            Responder::Local(reply) => {
                let _ = reply.send(response);
            }
        }
    }

    async fn apply(&mut self, peer: PeerId, request: index_sync::Request) -> index_sync::Response {
        use index_sync::Response;
        if !self.leading {
            return Response::NotLeader;
        }
        if let Err(reason) = request.check() {
            return Response::Refused { reason };
        }
        let coll = request.collection();
        let node = self.peers.entry(peer).or_default();
        node.absent_since = None;
        let sync = &mut node.colls[coll.index()];
        match request {
            index_sync::Request::Snapshot(page) => {
                let first = page.page == 0;
                match sync.snapshot {
                    _ if first => {
                        sync.snapshot = Some((page.session, 1, page.version));
                    }
                    Some((session, next, version))
                        if session == page.session
                            && next == page.page
                            && version == page.version =>
                    {
                        sync.snapshot = Some((session, next + 1, version));
                    }
                    _ => {
                        sync.snapshot = None;
                        return Response::NeedSnapshot;
                    }
                }
                if page.last {
                    sync.snapshot = None;
                }
                let (version, last) = (page.version, page.last);
                let entries: Vec<index::Entry> =
                    page.entries.into_iter().map(super::index_entry).collect();
                let result = self
                    .write(move |index| {
                        if first {
                            index.begin_snapshot(peer, coll);
                        }
                        index.upsert(peer, coll, entries)?;
                        Ok::<_, index::LimitError>(last.then(|| index.finish_snapshot(peer, coll)))
                    })
                    .await;
                match result {
                    Ok(finished) => {
                        if let Some(stale) = finished {
                            self.peers.entry(peer).or_default().colls[coll.index()].version =
                                Some(version);
                            tracing::debug!(%peer, ?coll, version, stale, "snapshot complete");
                        }
                        Response::Ack { version }
                    }
                    Err(e) => Response::Refused {
                        reason: e.to_string(),
                    },
                }
            }
            index_sync::Request::Delta(delta) => {
                if sync.version == Some(delta.version) {
                    // Already applied (a resend, or an empty delta that checks the version).
                    return Response::Ack {
                        version: delta.version,
                    };
                }
                if sync.version != Some(delta.base) {
                    return Response::NeedSnapshot;
                }
                let version = delta.version;
                let upserted: Vec<index::Entry> =
                    delta.upserted.into_iter().map(super::index_entry).collect();
                let removed = delta.removed;
                let result = self
                    .write(move |index| {
                        index.remove(peer, coll, &removed);
                        index.upsert(peer, coll, upserted)
                    })
                    .await;
                match result {
                    Ok(()) => {
                        self.peers.entry(peer).or_default().colls[coll.index()].version =
                            Some(version);
                        Response::Ack { version }
                    }
                    Err(e) => Response::Refused {
                        reason: e.to_string(),
                    },
                }
            }
        }
    }

    async fn on_search(
        &mut self,
        peer: PeerId,
        request: search::Request,
        respond: Responder<search::Response>,
    ) {
        let immediate = if !self.leading {
            Some(search::Response::NotLeader)
        } else if let Err(reason) = request.check() {
            tracing::debug!(%peer, %reason, "search refused");
            Some(search::Response::Refused { reason })
        } else {
            None
        };
        // A partial holder's list is soft state kept here: no search runs for it.
        let request = match (immediate.is_some(), request) {
            (false, search::Request::Partial { files }) => {
                self.partials.set(peer, files, Instant::now());
                send_search(&self.net, respond, search::Response::Noted).await;
                return;
            }
            (_, request) => request,
        };
        // The partial holders of the ids a holders request asks about, from the same place.
        let partial: Vec<_> = match &request {
            search::Request::Holders { ids } => {
                ids.iter().map(|id| self.partials.holders_of(id)).collect()
            }
            _ => Vec::new(),
        };
        let permit = match immediate {
            Some(_) => None,
            None => match self.searches.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tracing::debug!(%peer, "too many searches at once");
                    None
                }
            },
        };
        let net = self.net.clone();
        let Some(permit) = permit else {
            let response = immediate.unwrap_or(search::Response::Busy);
            send_search(&net, respond, response).await;
            return;
        };
        // Nodes that connected since the last look count from now (a healed partition brings
        // a whole network at once, a reconcile only looks every second).
        let connected = self.net.iwant_peers();
        self.note_joined(&connected);
        let filling = self.still_filling();
        let index = self.index.clone();
        let mut warm = self.warm.subscribe();
        let deadline = tokio::time::Instant::from_std(self.warm_deadline);
        tokio::spawn(async move {
            let _permit = permit;
            // Wait for the nodes' snapshots after a leader change, at most until the deadline.
            let _ = tokio::time::timeout_at(deadline, warm.wait_for(|w| *w)).await;
            let search = |request: search::Request| {
                let index = index.clone();
                tokio::task::spawn_blocking(move || {
                    run_search(&index.read().expect("bug: poisoned"), request, peer)
                })
            };
            let mut response = search(request).await.expect("bug: search panicked");
            if let search::Response::Holders { partial: p, .. } = &mut response {
                *p = partial;
            }
            // Nothing found by a new leader that lacks some connected node's index: "busy",
            // so the asker asks again (it owns the deadline), rather than "not found".
            let empty = matches!(&response, search::Response::Results(r) if r.total == 0);
            if empty && filling {
                response = search::Response::Busy;
            }
            send_search(&net, respond, response).await;
        });
    }
}

async fn send_search(
    net: &NetworkClient,
    respond: Responder<search::Response>,
    response: search::Response,
) {
    match respond {
        Responder::Net(channel) => net.respond::<SearchRpc>(channel, response, None).await,
        Responder::Local(reply) => {
            let _ = reply.send(response);
        }
    }
}

/// Answers a (checked) search request from the index; `requester` is listed first among the
/// holders of a hit it holds itself.
fn run_search(
    index: &NetworkIndex,
    request: search::Request,
    requester: PeerId,
) -> search::Response {
    let wire_hit = |hit| wire_hit(hit, requester);
    let hits = match request {
        search::Request::Search(query) => {
            let results = index.search(&index::Query {
                text: query.text,
                kind: query.kind,
                offset: query.offset as usize,
                limit: query.limit as usize,
            });
            return search::Response::Results(search::Results {
                total: results.total as u64,
                indexed: index.len() as u64,
                nodes: index.peers() as u32,
                hits: results.hits.into_iter().map(wire_hit).collect(),
            });
        }
        search::Request::Locate { prefix, max } => index.locate(&prefix, max as usize),
        // Taken by the service itself (`on_search`); never searched.
        search::Request::Partial { .. } => return search::Response::Noted,
        search::Request::Holders { ids } => {
            return search::Response::Holders {
                partial: Vec::new(),
                holders: ids
                    .iter()
                    .map(|id| {
                        index
                            .holders_of(&id.0)
                            .into_iter()
                            .take(search::MAX_HOLDERS)
                            .map(|p| p.to_string())
                            .collect()
                    })
                    .collect(),
            }
        }
    };
    search::Response::Results(search::Results {
        total: hits.len() as u64,
        indexed: index.len() as u64,
        nodes: index.peers() as u32,
        hits: hits.into_iter().map(wire_hit).collect(),
    })
}

fn wire_hit(mut hit: index::Hit, requester: PeerId) -> search::Hit {
    if let Some(i) = hit.holders.iter().position(|(p, _)| *p == requester) {
        hit.holders[..=i].rotate_right(1);
    }
    search::Hit {
        id: hit.id,
        kind: hit.kind,
        size: hit.size,
        path: hit.path,
        score: hit.score,
        holders: hit
            .holders
            .into_iter()
            .take(search::MAX_HOLDERS)
            .map(|(peer, _)| peer.to_string())
            .collect(),
        holder_count: hit.holder_count.min(u32::MAX as usize) as u32,
    }
}
