//! The network: one task owns the libp2p `Swarm`; everything else talks to it through a
//! [`NetworkClient`].
//!
//! The shape is rust-libp2p's file-sharing example: [`spawn`] builds the swarm, starts
//! listening (so address errors surface at start-up) and returns a cloneable [`NetworkClient`]
//! plus the [`EventLoop`] future. The client sends [`Command`]s over a bounded channel, each with
//! a `oneshot` for the answer; the loop `select!`s over swarm events, commands, a timer for
//! closing rule breakers' connections and the shutdown token.
//!
//! Connection policy (see `docs/architecture.md`), run by `iwant_behaviours::peers::Behaviour`
//! unless said otherwise:
//! - peers come from mDNS and from other nodes (peer exchange) into the address book
//!   (`iwant_behaviours::peers::Book`: of two nodes that find each other, the one with the
//!   smaller peer id dials; redials back off from 1 s to 60 s); `--peer` addresses are
//!   redialed every [`PIN_REDIAL`] while disconnected;
//! - duplicates from simultaneous dials are closed by `iwant_behaviours::connections`;
//! - a vanished peer is found by the kernel's TCP keepalive within about 5 s ([`tcp::tune`]);
//!   a connection with no answered ping for [`LIVENESS_TIMEOUT`] (20 s: a hung peer, whose
//!   kernel still answers the keepalive) is closed;
//! - connections to iwant peers stay open; others close after [`IDLE_TIMEOUT`] without streams.

pub mod addr;
mod event_loop;
pub mod pnet;
pub mod private;
pub mod tcp;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use iwant_behaviours::{chunk, content, index_sync, libp2p_stream, search, NodeBehaviour};
use libp2p::{
    request_response::{cbor, OutboundRequestId, ResponseChannel},
    Multiaddr, PeerId,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use event_loop::{spawn, EventLoop, NetConfig, NetError, Spawned, MAX_MET};

/// How many peer departures [`NetworkClient::departures`] holds for a slow receiver.
pub const DEPARTURES_QUEUE: usize = 256;

/// How many commands may wait for the event loop before senders wait.
pub const COMMAND_QUEUE: usize = 64;

pub use iwant_behaviours::peers::{LIVENESS_TIMEOUT, PIN_REDIAL};

/// How long a connection to a non-iwant peer may sit without streams before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one dial (TCP connect + Noise + Yamux) may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a shutting-down node may spend saying goodbye (a leader's last message to the
/// election participants) before the `Swarm` is dropped.
pub const GOODBYE_LIMIT: Duration = Duration::from_millis(300);

/// The leader this node follows (itself when it leads) and the term, as the election last
/// reported them; see [`NetworkClient::leader_watch`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaderView {
    /// The leader, or `None` while there is none (before the first election, between two).
    pub leader: Option<PeerId>,
    /// The term of the leader, or of the last one while there is none.
    pub term: u64,
}

/// How many inbound requests (index sync, search) may wait for the leader task; beyond it the
/// event loop answers "busy" (index sync) or drops the request (search) itself.
pub const INBOUND_QUEUE: usize = 256;

/// What the network hands to the leader task: requests from peers.
#[derive(Debug)]
pub enum LeaderInbound {
    /// A peer pushed (part of) its index.
    Index {
        /// The authenticated sender.
        peer: PeerId,
        /// What it sent (bounds not checked yet).
        request: index_sync::Request,
        /// Where the answer goes ([`NetworkClient::respond`]).
        channel: ResponseChannel<index_sync::Response>,
    },
    /// A peer asked a search.
    Search {
        /// The authenticated sender.
        peer: PeerId,
        /// The query (bounds not checked yet).
        request: search::Request,
        /// Where the answer goes ([`NetworkClient::respond`]).
        channel: ResponseChannel<search::Response>,
    },
}

/// A content request from a peer (piece lists, manifests), for the transfer server.
#[derive(Debug)]
pub struct ContentInbound {
    /// The authenticated sender.
    pub peer: PeerId,
    /// What it asked (bounds not checked yet).
    pub request: content::Request,
    /// Where the answer goes ([`NetworkClient::respond`]).
    pub channel: ResponseChannel<content::Response>,
}

/// A request to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// The network task is not running.
    #[error("the network task is not running")]
    Stopped,
    /// The request was not answered: not connected, connection lost, timed out, protocol not
    /// supported...
    #[error("{0}")]
    Failed(String),
}

impl From<NetworkStopped> for RequestError {
    fn from(_: NetworkStopped) -> Self {
        RequestError::Stopped
    }
}

/// Requests to the event loop.
pub enum Command {
    /// Report the node's network state.
    Status {
        /// Where the answer goes.
        reply: oneshot::Sender<NetStatus>,
    },
    /// Dial an address now and keep it connected (`peers::Behaviour::pin`).
    Dial {
        /// The address, optionally ending in `/p2p/<peer id>`.
        addr: Multiaddr,
        /// Whether the dial could be started.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Stop following `leader`, which does not serve, and ignore it for a while
    /// ([`NetworkClient::depose`]).
    Depose {
        /// The leader.
        leader: PeerId,
    },
    /// Send a request on one of the request-response protocols ([`NetworkClient::request`]):
    /// the closure hands it to the protocol's behaviour and files the reply under its request
    /// id.
    Request(SendRequest),
    /// Answer an inbound request ([`NetworkClient::respond`]): the closure hands the answer to
    /// the protocol's behaviour and says whether it could be sent.
    Respond {
        /// Sends the answer.
        send: Box<dyn FnOnce(&mut NodeBehaviour) -> bool + Send>,
        /// Close the connection to the peer once the answer is sent (it broke a rule).
        then_disconnect: Option<PeerId>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Status { .. } => f.write_str("Status"),
            Command::Dial { addr, .. } => write!(f, "Dial({addr})"),
            Command::Depose { leader } => write!(f, "Depose({leader})"),
            Command::Request(_) => f.write_str("Request"),
            Command::Respond {
                then_disconnect, ..
            } => write!(f, "Respond(then_disconnect: {then_disconnect:?})"),
        }
    }
}

/// Hands a request to its protocol's behaviour and files its reply ([`Command::Request`]).
pub type SendRequest = Box<dyn FnOnce(&mut NodeBehaviour, &mut Pending) + Send>;

/// Where an answer to one of our requests goes.
type Reply<T> = oneshot::Sender<Result<T, RequestError>>;

/// One of the node's request-response protocols, as the generic plumbing sees it: its
/// messages, its behaviour in the swarm, and where its requests wait for their answers.
pub trait Rpc: Send + 'static {
    /// What is asked.
    type Request: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static;
    /// What is answered.
    type Response: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static;
    /// The name in logs.
    const NAME: &'static str;
    /// The protocol's behaviour.
    fn behaviour(b: &mut NodeBehaviour) -> &mut cbor::Behaviour<Self::Request, Self::Response>;
    /// Its requests waiting for their answers.
    fn pending(p: &mut Pending) -> &mut HashMap<OutboundRequestId, Reply<Self::Response>>;
}

/// Our requests waiting for their answers, one map per protocol (request ids are only unique
/// within one behaviour).
#[derive(Default)]
pub struct Pending {
    index: HashMap<OutboundRequestId, Reply<index_sync::Response>>,
    search: HashMap<OutboundRequestId, Reply<search::Response>>,
    content: HashMap<OutboundRequestId, Reply<content::Response>>,
}

/// Declares one of the node's request-response protocols: a marker type and its [`Rpc`] impl
/// (its messages live in `iwant_behaviours::$module`, its behaviour in `NodeBehaviour::$module`,
/// its waiting requests in `Pending::$pending`).
macro_rules! rpc {
    ($(#[$doc:meta])* $name:ident, $module:ident, $pending:ident, $label:literal) => {
        $(#[$doc])*
        pub struct $name;

        impl Rpc for $name {
            type Request = $module::Request;
            type Response = $module::Response;
            const NAME: &'static str = $label;
            fn behaviour(
                b: &mut NodeBehaviour,
            ) -> &mut cbor::Behaviour<Self::Request, Self::Response> {
                &mut b.$module
            }
            fn pending(p: &mut Pending) -> &mut HashMap<OutboundRequestId, Reply<Self::Response>> {
                &mut p.$pending
            }
        }
    };
}

rpc!(
    /// `/iwant/index/1.0.0`: index pushes to the leader.
    IndexRpc, index_sync, index, "index sync"
);
rpc!(
    /// `/iwant/search/1.0.0`: searches at the leader.
    SearchRpc, search, search, "search"
);
rpc!(
    /// `/iwant/content/1.0.0`: piece lists and manifests from a holder.
    ContentRpc, content, content, "content"
);

/// A snapshot of the node's network state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetStatus {
    /// This node's peer id.
    pub peer_id: String,
    /// This node's name.
    pub name: String,
    /// The addresses this node listens on.
    pub listen_addrs: Vec<String>,
    /// Connected peers, sorted by peer id.
    pub peers: Vec<PeerStatus>,
    /// The leader this node follows (its peer id; this node's own when it leads), if any.
    pub leader: Option<String>,
    /// The election term.
    pub term: u64,
    /// The fingerprint of the private network's key, if this node runs one.
    pub network_key: Option<String>,
}

/// One connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's id.
    pub peer_id: String,
    /// The remote address of each open connection.
    pub addrs: Vec<String>,
    /// Number of open connections (1 once duplicates are closed).
    pub connections: usize,
    /// The identify agent, once known (`iwant/<version> (<name>)` for iwant nodes).
    pub agent: Option<String>,
    /// The name an iwant peer announces (cleaned; for people only, never trusted).
    pub name: Option<String>,
    /// The last ping round-trip time in microseconds.
    pub rtt_us: Option<u64>,
}

/// The end of a peer id, as people see it where no name is known (`…x3Fq9k`: the start is the
/// same for every Ed25519 peer id).
pub fn short_peer(peer: &PeerId) -> String {
    short_peer_text(&peer.to_base58())
}

/// How to show `peer` to a person: its name in `names`, or the end of its id.
fn name_or_short(names: &HashMap<PeerId, String>, peer: &PeerId) -> String {
    match names.get(peer) {
        Some(name) => name.clone(),
        None => short_peer(peer),
    }
}

/// [`short_peer`] of a peer id given as text (as the control channel carries it).
pub fn short_peer_text(peer: &str) -> String {
    let start = peer.char_indices().rev().nth(5).map_or(0, |(i, _)| i);
    format!("…{}", &peer[start..])
}

/// The event loop stopped: it shut down or crashed.
#[derive(Debug, thiserror::Error)]
#[error("the network task is not running")]
pub struct NetworkStopped;

/// A cloneable handle to the event loop.
#[derive(Clone)]
pub struct NetworkClient {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    leader: watch::Receiver<LeaderView>,
    chunk: libp2p_stream::Control,
    departures: broadcast::Sender<PeerId>,
    iwant_peers: watch::Receiver<Arc<HashSet<PeerId>>>,
    names: watch::Receiver<Arc<HashMap<PeerId, String>>>,
    met: watch::Receiver<Arc<HashSet<PeerId>>>,
}

impl std::fmt::Debug for NetworkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkClient")
            .field("local_peer_id", &self.local_peer_id)
            .finish_non_exhaustive()
    }
}

impl NetworkClient {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The current leader and term, updated at every leader change (a new leader, a lost
    /// leader, or the same leader in a higher term). For work that must follow the leader,
    /// such as sending it this node's index.
    pub fn leader_watch(&self) -> watch::Receiver<LeaderView> {
        self.leader.clone()
    }

    /// The current network state.
    pub async fn status(&self) -> Result<NetStatus, NetworkStopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Status { reply }).await?;
        rx.await.map_err(|_| NetworkStopped)
    }

    /// Dials `addr` and keeps redialing it whenever it is disconnected.
    pub async fn dial(&self, addr: Multiaddr) -> Result<Result<(), String>, NetworkStopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Dial { addr, reply }).await?;
        rx.await.map_err(|_| NetworkStopped)
    }

    /// Deposes `leader`, which does not serve: this node stops following it and ignores it
    /// in elections for a while (`election::Input::Depose`), so that it follows (or becomes)
    /// another leader.
    pub async fn depose(&self, leader: PeerId) -> Result<(), NetworkStopped> {
        self.send(Command::Depose { leader }).await
    }

    /// Sends `request` to `peer` on protocol `P` and waits for its answer.
    pub async fn request<P: Rpc>(
        &self,
        peer: PeerId,
        request: P::Request,
    ) -> Result<P::Response, RequestError> {
        let (reply, rx) = oneshot::channel();
        let send = move |b: &mut NodeBehaviour, pending: &mut Pending| {
            let id = P::behaviour(b).send_request(&peer, request);
            P::pending(pending).insert(id, reply);
        };
        self.send(Command::Request(Box::new(send))).await?;
        rx.await.map_err(|_| RequestError::Stopped)?
    }

    /// Answers an inbound request of protocol `P` (the requester may be gone: then nothing
    /// happens); with `then_disconnect`, closes the connections to that peer once the answer
    /// is sent (it broke a rule; it will be redialed later, like any known peer).
    pub async fn respond<P: Rpc>(
        &self,
        channel: ResponseChannel<P::Response>,
        response: P::Response,
        then_disconnect: Option<PeerId>,
    ) {
        let send =
            move |b: &mut NodeBehaviour| P::behaviour(b).send_response(channel, response).is_ok();
        let _ = self
            .send(Command::Respond {
                send: Box::new(send),
                then_disconnect,
            })
            .await;
    }

    /// Sends an index sync request to `peer` and waits for its answer.
    pub async fn sync_index(
        &self,
        peer: PeerId,
        request: index_sync::Request,
    ) -> Result<index_sync::Response, RequestError> {
        self.request::<IndexRpc>(peer, request).await
    }

    /// Sends a search request to `peer` and waits for its answer.
    pub async fn search(
        &self,
        peer: PeerId,
        request: search::Request,
    ) -> Result<search::Response, RequestError> {
        self.request::<SearchRpc>(peer, request).await
    }

    /// Sends a content request to `peer` and waits for its answer.
    pub async fn content(
        &self,
        peer: PeerId,
        request: content::Request,
    ) -> Result<content::Response, RequestError> {
        self.request::<ContentRpc>(peer, request).await
    }

    /// Opens a `/iwant/chunk/1` stream to a connected `peer`.
    pub async fn open_chunk_stream(&self, peer: PeerId) -> Result<libp2p::Stream, RequestError> {
        self.chunk
            .clone()
            .open_stream(peer, chunk::PROTOCOL)
            .await
            .map_err(|e| RequestError::Failed(e.to_string()))
    }

    /// The peers whose last connection closed, as they leave. A receiver that falls more
    /// than [`DEPARTURES_QUEUE`] behind misses some (and is told so).
    pub fn departures(&self) -> broadcast::Receiver<PeerId> {
        self.departures.subscribe()
    }

    /// The names of connected iwant peers, now (no round trip to the event loop).
    pub fn names(&self) -> Arc<HashMap<PeerId, String>> {
        self.names.borrow().clone()
    }

    /// How to show `peer` to a person: its name, or the end of its id.
    pub fn display_name(&self, peer: &PeerId) -> String {
        name_or_short(&self.names.borrow(), peer)
    }

    /// The connected peers identified as iwant nodes.
    pub fn iwant_peers(&self) -> Arc<HashSet<PeerId>> {
        self.iwant_peers.borrow().clone()
    }

    /// Every peer this node was connected to since it started, connected now or not (at most
    /// [`MAX_MET`], the oldest forgotten first).
    pub fn met_peers(&self) -> Arc<HashSet<PeerId>> {
        self.met.borrow().clone()
    }

    /// The inbound `/iwant/chunk/1` streams. Only one caller (the transfer server) may take
    /// them; a second call fails.
    pub fn accept_chunk_streams(&self) -> Option<libp2p_stream::IncomingStreams> {
        self.chunk.clone().accept(chunk::PROTOCOL).ok()
    }

    async fn send(&self, command: Command) -> Result<(), NetworkStopped> {
        self.commands
            .send(command)
            .await
            .map_err(|_| NetworkStopped)
    }
}
