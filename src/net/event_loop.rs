//! The task that owns the `Swarm`.

use std::{
    collections::{hash_map::Entry, HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use iwant_behaviours::{
    content, election, index_sync, mdns,
    peer_exchange::{self, Ack, Announce},
    peers, search, NodeBehaviour, NodeBehaviourEvent,
};
use libp2p::{
    core::transport::{ListenerId, TransportError},
    core::{muxing::StreamMuxerBox, transport::Boxed, upgrade, Transport},
    identify,
    identity::Keypair,
    multiaddr::Protocol,
    noise, ping,
    pnet::PreSharedKey,
    request_response::{self, ResponseChannel},
    swarm::{ConnectionId, SwarmEvent},
    yamux, Multiaddr, PeerId, Swarm,
};
use tokio::{
    sync::{broadcast, mpsc, watch},
    time::MissedTickBehavior,
};
use tokio_util::sync::CancellationToken;

use super::{
    private::{HandshakeHints, Layer, Sniffer, Verdicts},
    tcp, Command, ContentInbound, ContentRpc, IndexRpc, LeaderInbound, LeaderView, NetStatus,
    NetworkClient, PeerStatus, Pending, RequestError, Rpc, SearchRpc, COMMAND_QUEUE,
    DEPARTURES_QUEUE, DIAL_TIMEOUT, GOODBYE_LIMIT, IDLE_TIMEOUT, INBOUND_QUEUE,
};
use crate::config::DEFAULT_PORT;

/// What the network needs to start.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Addresses to listen on; empty means all IPv4 interfaces on [`DEFAULT_PORT`], or on a
    /// free port if that one is taken.
    pub listen: Vec<Multiaddr>,
    /// Addresses to dial and keep dialing.
    pub peers: Vec<Multiaddr>,
    /// Run mDNS discovery.
    pub mdns: bool,
    /// The private network's pre-shared key, if this node runs one.
    pub network_key: Option<PreSharedKey>,
    /// How many connections to take (from the open-file limit).
    pub budget: crate::limits::ConnectionBudget,
    /// This node's name, announced in its identify agent string (`iwant/<version> (<name>)`).
    pub name: String,
}

/// The network could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The transport or a behaviour could not be built.
    #[error("cannot set up the network: {0}")]
    Setup(String),
    /// A listen address's port is taken (by another node or program).
    #[error("cannot listen on {addr}: port {port} is already in use; pick another with --listen, or stop the program using it")]
    PortInUse {
        /// The address.
        addr: Multiaddr,
        /// Its port.
        port: u16,
    },
    /// A listen address could not be used.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why not.
        reason: String,
    },
}

#[derive(Default)]
struct Peer {
    connections: HashMap<ConnectionId, Conn>,
    agent: Option<String>,
    rtt: Option<Duration>,
    /// The listen addresses it announced in identify, once it identified as an iwant node.
    iwant_addrs: Option<Vec<Multiaddr>>,
}

struct Conn {
    remote: Multiaddr,
}

/// Addresses of one peer dialed at once.
const DIAL_CONCURRENCY: std::num::NonZeroU8 = std::num::NonZeroU8::new(4).unwrap();

/// How many peers [`NetworkClient::met_peers`] remembers.
pub const MAX_MET: usize = 4096;

/// How long a peer that broke a rule keeps its connection after its refusal was sent.
const DISCONNECT_GRACE: Duration = Duration::from_millis(500);

/// The event loop; run it with [`EventLoop::run`].
pub struct EventLoop {
    swarm: Swarm<NodeBehaviour>,
    commands: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
    peers: HashMap<PeerId, Peer>,
    listen_addrs: Vec<Multiaddr>,
    /// The election's leader and term, for [`NetworkClient::leader_watch`].
    leader: watch::Sender<LeaderView>,
    /// Requests from peers, to the leader task.
    inbound: mpsc::Sender<LeaderInbound>,
    /// Our requests waiting for their answers, per protocol.
    pending: Pending,
    /// Content requests from peers, to the transfer server.
    content_inbound: mpsc::Sender<ContentInbound>,
    /// Peers to disconnect once their index sync answer is sent (they broke a rule).
    disconnect_after_response: HashSet<PeerId>,
    /// Peers that broke a rule, to disconnect at the given time (after their answer is sent).
    disconnect_at: HashMap<PeerId, Instant>,
    /// Warnings for handshakes that fail (a network key mismatch).
    hints: HandshakeHints,
    /// Where peers whose last connection closed are announced.
    departures: broadcast::Sender<PeerId>,
    /// The connected peers identified as iwant nodes, for [`NetworkClient::iwant_peers`].
    iwant_peers: watch::Sender<Arc<HashSet<PeerId>>>,
    /// The names connected iwant peers announce, for [`NetworkClient::names`].
    names: watch::Sender<Arc<HashMap<PeerId, String>>>,
    /// This node's own name.
    name: String,
    /// Every peer connected since the start, for [`NetworkClient::met_peers`], and the order
    /// they were met in (the oldest is forgotten first beyond [`MAX_MET`]).
    met: (watch::Sender<Arc<HashSet<PeerId>>>, VecDeque<PeerId>),
    /// The free-port listener used because the default port could not be, until its port is
    /// logged.
    fallback: Option<Fallback>,
}

/// Why a node listens on a free port instead of [`DEFAULT_PORT`].
struct Fallback {
    listener: ListenerId,
    /// The default port is in use (another iwant node, most likely).
    taken: bool,
    /// The error of the default port.
    reason: String,
}

/// The error for a listen address that failed: [`NetError::PortInUse`] when its port is taken.
fn listen_error(addr: Multiaddr, error: TransportError<std::io::Error>) -> NetError {
    let port = addr.iter().find_map(|p| match p {
        Protocol::Tcp(port) => Some(port),
        _ => None,
    });
    match port {
        Some(port) if port != 0 && port_in_use(&addr) => NetError::PortInUse { addr, port },
        _ => NetError::Listen {
            reason: describe(&error),
            addr,
        },
    }
}

/// Whether `addr`'s port is taken: a fresh exclusive bind of it fails with `AddrInUse`. (The
/// transport layers above TCP hide the kind of the error of a failed listen.)
fn port_in_use(addr: &Multiaddr) -> bool {
    tcp::socket_addr(addr).is_some_and(|a| {
        tcp::bind_exclusive(a).is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// The text of a listen error (some transport layers display as nothing).
fn describe(error: &TransportError<std::io::Error>) -> String {
    match error.to_string() {
        text if text.trim().is_empty() => format!("{error:?}"),
        text => text,
    }
}

/// What [`spawn`] returns.
pub struct Spawned {
    /// The handle for everyone else.
    pub client: NetworkClient,
    /// The loop; run it with [`EventLoop::run`].
    pub event_loop: EventLoop,
    /// Requests from peers and peer arrivals/departures, for the leader task.
    pub inbound: mpsc::Receiver<LeaderInbound>,
    /// Content requests from peers, for the transfer server.
    pub content_inbound: mpsc::Receiver<ContentInbound>,
}

/// Builds the swarm, starts listening and dialing, and returns the client, the loop and the
/// inbound request queue.
pub fn spawn(
    keypair: Keypair,
    config: NetConfig,
    shutdown: CancellationToken,
) -> Result<Spawned, NetError> {
    let local_peer_id = keypair.public().to_peer_id();
    let mut behaviour_config = iwant_behaviours::Config::default()
        .with_mdns(config.mdns)
        .with_agent_version(iwant_behaviours::agent_with_name(&config.name));
    let budget = config.budget;
    behaviour_config.connection_limits = behaviour_config
        .connection_limits
        .with_max_established(Some(budget.established))
        .with_max_pending_incoming(Some(budget.pending_incoming))
        .with_max_pending_outgoing(Some(budget.pending_outgoing));
    let verdicts = Verdicts::default();
    let transport = build_transport(&keypair, config.network_key, verdicts.clone())
        .map_err(|e| NetError::Setup(e.to_string()))?;
    let behaviour = NodeBehaviour::new(&keypair, behaviour_config)
        .map_err(|e| NetError::Setup(e.to_string()))?;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|_| transport)
        .unwrap_or_else(|never| match never {})
        .with_behaviour(|_| behaviour)
        .unwrap_or_else(|never| match never {})
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(IDLE_TIMEOUT)
                // Addresses tried at once per dial (libp2p's default is 8): with
                // `peers::MAX_DIALS`, it bounds the connection attempts in flight.
                .with_dial_concurrency_factor(DIAL_CONCURRENCY)
        })
        .build();

    let mut fallback = None;
    if config.listen.is_empty() {
        let default =
            Multiaddr::from(std::net::Ipv4Addr::UNSPECIFIED).with(Protocol::Tcp(DEFAULT_PORT));
        if let Err(e) = swarm.listen_on(default.clone()) {
            let any = Multiaddr::from(std::net::Ipv4Addr::UNSPECIFIED).with(Protocol::Tcp(0));
            let listener = swarm
                .listen_on(any.clone())
                .map_err(|e| listen_error(any, e))?;
            // Logged once the port is known, at its first address.
            fallback = Some(Fallback {
                listener,
                taken: port_in_use(&default),
                reason: describe(&e),
            });
        }
    } else {
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| listen_error(addr.clone(), e))?;
        }
    }

    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (leader_tx, leader_rx) = watch::channel(LeaderView::default());
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
    let (content_tx, content_rx) = mpsc::channel(INBOUND_QUEUE);
    let chunk = swarm.behaviour().chunk.new_control();
    let (departures, _) = broadcast::channel(DEPARTURES_QUEUE);
    let (iwant_peers, iwant_peers_rx) = watch::channel(Arc::new(HashSet::new()));
    let (names, names_rx) = watch::channel(Arc::new(HashMap::new()));
    let (met, met_rx) = watch::channel(Arc::new(HashSet::new()));
    for addr in config.peers {
        if let Err(error) = swarm.behaviour_mut().peers.pin(addr) {
            tracing::warn!(%error, "not dialing a --peer address");
        }
    }
    let event_loop = EventLoop {
        swarm,
        commands: rx,
        shutdown,
        peers: HashMap::new(),
        listen_addrs: Vec::new(),
        leader: leader_tx,
        inbound: inbound_tx,
        pending: Pending::default(),
        content_inbound: content_tx,
        disconnect_after_response: HashSet::new(),
        disconnect_at: HashMap::new(),
        hints: HandshakeHints::new(config.network_key.as_ref(), verdicts),
        departures: departures.clone(),
        iwant_peers,
        names,
        name: config.name,
        met: (met, VecDeque::new()),
        fallback,
    };
    let client = NetworkClient {
        commands: tx,
        local_peer_id,
        leader: leader_rx,
        chunk,
        departures,
        iwant_peers: iwant_peers_rx,
        names: names_rx,
        met: met_rx,
    };
    Ok(Spawned {
        client,
        event_loop,
        inbound: inbound_rx,
        content_inbound: content_rx,
    })
}

/// TCP, then (in a private network) the pre-shared key handshake, then Noise, then Yamux,
/// with a deadline on the whole dial. The first bytes each connection receives are sniffed
/// (`private::Sniffer`: below and above the key) and what they say about the peer's key goes
/// to `verdicts`.
fn build_transport(
    key: &Keypair,
    network_key: Option<PreSharedKey>,
    verdicts: Verdicts,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let tcp = tcp::Transport::new();
    match network_key {
        None => secure(
            tcp.map(move |socket, endpoint| {
                let remote = endpoint.get_remote_address();
                Sniffer::new(socket, remote, Layer::Open, verdicts.clone())
            }),
            key,
        ),
        Some(psk) => secure(
            tcp.and_then(move |socket, endpoint| {
                let remote = endpoint.get_remote_address().clone();
                let below = Sniffer::new(socket, &remote, Layer::BelowKey, verdicts.clone());
                let verdicts = verdicts.clone();
                async move {
                    let decrypted = super::pnet::handshake(below, &psk).await?;
                    Ok::<_, std::io::Error>(Sniffer::new(
                        decrypted,
                        &remote,
                        Layer::AboveKey,
                        verdicts,
                    ))
                }
            }),
            key,
        ),
    }
}

/// Noise and Yamux over any byte-stream transport.
fn secure<T>(transport: T, key: &Keypair) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let noise = noise::Config::new(key)?;
    Ok(transport
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(DIAL_TIMEOUT)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// Whether `addr` is on a loopback interface (`127.0.0.0/8`, `::1`).
fn is_loopback(addr: &Multiaddr) -> bool {
    iwant_behaviours::connections::ip_of(addr).is_some_and(|ip| ip.is_loopback())
}

impl EventLoop {
    /// Drives the swarm until the shutdown token is cancelled.
    pub async fn run(mut self) {
        let mut disconnects = tokio::time::interval(DISCONNECT_GRACE);
        disconnects.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    // Every client is gone: nobody can ask anything any more.
                    None => break,
                },
                _ = disconnects.tick() => self.disconnect_rule_breakers(),
            }
        }
        self.say_goodbye().await;
        tracing::debug!("network event loop stopped");
    }

    /// Lets the election send its goodbyes (only a leader has any), for at most
    /// [`GOODBYE_LIMIT`], so the others elect a new leader at once instead of waiting for a
    /// timeout.
    async fn say_goodbye(&mut self) {
        self.swarm.behaviour_mut().election.leave();
        let goodbyes = async {
            loop {
                if let SwarmEvent::Behaviour(NodeBehaviourEvent::Election(election::Event::Left)) =
                    self.swarm.select_next_some().await
                {
                    return;
                }
            }
        };
        if tokio::time::timeout(GOODBYE_LIMIT, goodbyes).await.is_err() {
            tracing::debug!("goodbyes not all written in {GOODBYE_LIMIT:?}; leaving anyway");
        }
    }

    fn on_election(&mut self, event: election::Event) {
        let local = *self.swarm.local_peer_id();
        match event {
            election::Event::LeaderElected { leader, term } => {
                let previous = self.leader.borrow().leader;
                if leader == local {
                    tracing::info!(%leader, term, "this node is the leader");
                } else if previous == Some(leader) {
                    tracing::info!(%leader, term, "the leader moved to a new term");
                } else {
                    tracing::info!(%leader, term, "following a new leader");
                }
                self.leader.send_replace(LeaderView {
                    leader: Some(leader),
                    term,
                });
            }
            election::Event::LeaderLost { term } => {
                let lost = self.leader.borrow().leader;
                if let Some(leader) = lost {
                    tracing::info!(%leader, term, "lost the leader; electing another");
                }
                self.leader.send_replace(LeaderView { leader: None, term });
            }
            election::Event::Left => {}
        }
    }

    /// Closes the connection of a peer that broke a rule once [`DISCONNECT_GRACE`] has passed
    /// (if its answer was flagged for it), so that the refusal reaches it first: closing at
    /// once can cut the answer off in flight.
    fn disconnect_soon(&mut self, peer: PeerId) {
        if self.disconnect_after_response.remove(&peer) {
            self.disconnect_at
                .insert(peer, Instant::now() + DISCONNECT_GRACE);
        }
    }

    fn disconnect_rule_breakers(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .disconnect_at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.disconnect_at.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Dial { addr, reply } => {
                let result = self.swarm.behaviour_mut().peers.pin(addr);
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
            Command::Depose { leader } => {
                tracing::warn!(%leader, "the leader does not answer this node's index pushes: following another");
                self.swarm.behaviour_mut().election.depose(leader);
            }
            Command::Request(send) => send(self.swarm.behaviour_mut(), &mut self.pending),
            Command::Respond {
                send,
                then_disconnect,
            } => {
                // The requester may be gone; nothing to do then.
                let sent = send(self.swarm.behaviour_mut());
                if let Some(peer) = then_disconnect {
                    if sent && self.disconnect_after_response.len() < INBOUND_QUEUE {
                        self.disconnect_after_response.insert(peer);
                    } else {
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                }
            }
        }
    }

    /// Hands an inbound request to the leader task, or answers it here when the task is
    /// overloaded or gone.
    fn on_index_sync(&mut self, event: index_sync::Event) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let inbound = LeaderInbound::Index {
                    peer,
                    request,
                    channel,
                };
                if let Err(e) = self.inbound.try_send(inbound) {
                    if let LeaderInbound::Index { channel, .. } = e.into_inner() {
                        tracing::debug!(%peer, "leader task busy; index push refused");
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .index_sync
                            .send_response(channel, index_sync::Response::Busy);
                    }
                }
            }
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = IndexRpc::pending(&mut self.pending).remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "index sync request failed");
                if let Some(reply) = IndexRpc::pending(&mut self.pending).remove(&request_id) {
                    let _ = reply.send(Err(RequestError::Failed(error.to_string())));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                // An undecodable request (too large, malformed) lands here.
                tracing::warn!(%peer, %error, "bad index sync request");
                self.disconnect_soon(peer);
            }
            Event::ResponseSent { peer, .. } => self.disconnect_soon(peer),
        }
    }

    fn on_search(&mut self, event: search::Event) {
        let Some((peer, request, channel)) = route::<SearchRpc>(event, &mut self.pending) else {
            return;
        };
        let inbound = LeaderInbound::Search {
            peer,
            request,
            channel,
        };
        if self.inbound.try_send(inbound).is_err() {
            // Dropping the channel tells the requester it failed.
            tracing::debug!(%peer, "leader task busy; search dropped");
        }
    }

    /// Hands an inbound content request to the transfer server (answering `busy` here when
    /// it is overloaded).
    fn on_content(&mut self, event: content::Event) {
        let Some((peer, request, channel)) = route::<ContentRpc>(event, &mut self.pending) else {
            return;
        };
        let inbound = ContentInbound {
            peer,
            request,
            channel,
        };
        if let Err(e) = self.content_inbound.try_send(inbound) {
            tracing::debug!(%peer, "transfer server busy; content request refused");
            let _ = self
                .swarm
                .behaviour_mut()
                .content
                .send_response(e.into_inner().channel, content::Response::Busy);
        }
    }

    fn status(&self) -> NetStatus {
        let mut peers: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(id, peer)| PeerStatus {
                peer_id: id.to_string(),
                addrs: peer
                    .connections
                    .values()
                    .map(|c| c.remote.to_string())
                    .collect(),
                connections: peer.connections.len(),
                agent: peer.agent.clone(),
                name: peer.agent.as_deref().and_then(iwant_behaviours::agent_name),
                rtt_us: peer.rtt.map(|d| d.as_micros() as u64),
            })
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        let election = &self.swarm.behaviour().election;
        NetStatus {
            peer_id: self.swarm.local_peer_id().to_string(),
            name: self.name.clone(),
            listen_addrs: self.listen_addrs.iter().map(|a| a.to_string()).collect(),
            peers,
            leader: election.leader().map(|p| p.to_string()),
            term: election.term(),
            network_key: self.hints.fingerprint().map(str::to_owned),
        }
    }

    /// Dials every known address (`--peer`, the config, `iwant dial`) that is not connected.
    /// Tells a newly identified iwant peer about our other iwant peers (one direction only:
    /// telling every peer about every newcomer as well costs n² messages per node while a room
    /// of nodes forms, n³ in all; the others meet the newcomer when it dials them, or by
    /// mDNS). Loopback addresses go only to a peer connected over loopback: to any other, they
    /// name its own machine.
    fn exchange_peers(&mut self, new: PeerId) {
        let Some(newcomer) = self.peers.get(&new) else {
            return;
        };
        if newcomer.iwant_addrs.is_none() {
            return;
        }
        let local_link = newcomer
            .connections
            .values()
            .any(|c| is_loopback(&c.remote));
        let others: Vec<(PeerId, Vec<Multiaddr>)> = self
            .peers
            .iter()
            .filter(|(id, _)| **id != new)
            .filter_map(|(id, p)| {
                let addrs: Vec<Multiaddr> = p
                    .iwant_addrs
                    .as_ref()?
                    .iter()
                    .filter(|a| local_link || !is_loopback(a))
                    .cloned()
                    .collect();
                (!addrs.is_empty()).then_some((*id, addrs))
            })
            .collect();
        let behaviour = &mut self.swarm.behaviour_mut().peer_exchange;
        for chunk in others.chunks(peer_exchange::MAX_PEERS) {
            behaviour.send_request(&new, Announce::new(chunk.iter().map(|(p, a)| (*p, &a[..]))));
        }
    }

    fn on_peer_exchange(&mut self, event: peer_exchange::Event) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .peer_exchange
                    .send_response(channel, Ack {});
                let records = match request.parse() {
                    Ok(records) => records,
                    Err(reason) => {
                        tracing::warn!(%peer, %reason, "refused a peer announcement");
                        return;
                    }
                };
                let behaviour = self.swarm.behaviour_mut();
                for (other, addrs) in records {
                    match behaviour.peers.add(other, &addrs, peers::Source::Announced) {
                        peers::Added::New => {
                            tracing::debug!(from = %peer, peer = %other, "learned of a peer");
                            behaviour.election.discovered(other);
                        }
                        peers::Added::Full => {
                            tracing::warn!(%peer, "too many announced peers; ignoring the rest");
                            break;
                        }
                        peers::Added::Known | peers::Added::Ignored => {}
                    }
                }
            }
            Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "peer announcement not delivered");
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "peer announcement not received");
            }
            Event::Message { .. } | Event::ResponseSent { .. } => {}
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<NodeBehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if let Some(f) = self.fallback.take_if(|f| f.listener == listener_id) {
                    let port = address
                        .iter()
                        .find_map(|p| match p {
                            Protocol::Tcp(port) => Some(port),
                            _ => None,
                        })
                        .unwrap_or(0);
                    if f.taken {
                        tracing::warn!("port {DEFAULT_PORT} is taken (another iwant node?); listening on port {port} instead");
                    } else {
                        tracing::warn!(error = %f.reason, "cannot listen on port {DEFAULT_PORT}; listening on port {port} instead");
                    }
                }
                tracing::info!(addr = %address, "listening");
                self.listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(%error, "listener error");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let peer = self.peers.entry(peer_id).or_default();
                if peer.connections.is_empty() {
                    tracing::info!(peer = %super::short_peer(&peer_id), addr = %endpoint.get_remote_address(), "peer connected");
                    let (met, order) = &mut self.met;
                    met.send_if_modified(|met| {
                        if met.contains(&peer_id) {
                            return false;
                        }
                        let met = Arc::make_mut(met);
                        if order.len() >= MAX_MET {
                            if let Some(oldest) = order.pop_front() {
                                met.remove(&oldest);
                            }
                        }
                        order.push_back(peer_id);
                        met.insert(peer_id)
                    });
                }
                peer.connections.insert(
                    connection_id,
                    Conn {
                        remote: endpoint.get_remote_address().clone(),
                    },
                );
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                if let Entry::Occupied(mut entry) = self.peers.entry(peer_id) {
                    entry.get_mut().connections.remove(&connection_id);
                    if entry.get().connections.is_empty() {
                        entry.remove();
                        let who = self.who(&peer_id);
                        let _ = self.departures.send(peer_id);
                        self.iwant_peers.send_if_modified(|peers| {
                            peers.contains(&peer_id) && Arc::make_mut(peers).remove(&peer_id)
                        });
                        self.names.send_if_modified(|names| {
                            names.contains_key(&peer_id)
                                && Arc::make_mut(names).remove(&peer_id).is_some()
                        });
                        match cause {
                            Some(error) => {
                                tracing::info!(peer = %who, %error, "peer disconnected")
                            }
                            None => tracing::info!(peer = %who, "peer disconnected"),
                        }
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                match peer_id {
                    Some(peer) => tracing::debug!(%peer, %error, "dial failed"),
                    None => tracing::debug!(%error, "dial failed"),
                }
                if let libp2p::swarm::DialError::Transport(attempts) = &error {
                    for (addr, error) in attempts {
                        self.hints.failed(Some(addr), false, error);
                    }
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => self.hints.failed(Some(&send_back_addr), true, &error),
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    /// A peer as logs show it to people: its name, or the end of its id.
    fn who(&self, peer: &PeerId) -> String {
        super::name_or_short(&self.names.borrow(), peer)
    }

    fn on_behaviour_event(&mut self, event: NodeBehaviourEvent) {
        match event {
            NodeBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let is_iwant = iwant_behaviours::is_iwant_agent(&info.agent_version);
                if is_iwant {
                    self.swarm.behaviour_mut().connections.keep_alive(peer_id);
                }
                let Some(peer) = self.peers.get_mut(&peer_id) else {
                    return;
                };
                if peer.agent.as_deref() != Some(&info.agent_version) {
                    tracing::debug!(peer = %peer_id, agent = %info.agent_version, "identified");
                }
                let name = iwant_behaviours::agent_name(&info.agent_version);
                peer.agent = Some(info.agent_version);
                self.names.send_if_modified(|names| {
                    if names.get(&peer_id) == name.as_ref() {
                        return false;
                    }
                    let names = Arc::make_mut(names);
                    match name {
                        Some(name) => names.insert(peer_id, name),
                        None => names.remove(&peer_id),
                    };
                    true
                });
                self.iwant_peers.send_if_modified(|peers| {
                    if is_iwant == peers.contains(&peer_id) {
                        return false;
                    }
                    let peers = Arc::make_mut(peers);
                    if is_iwant {
                        peers.insert(peer_id)
                    } else {
                        peers.remove(&peer_id)
                    }
                });
                if is_iwant {
                    let first = peer.iwant_addrs.is_none();
                    let mut addrs = info.listen_addrs;
                    addrs.truncate(peer_exchange::MAX_ADDRS);
                    peer.iwant_addrs = Some(addrs);
                    if first {
                        self.exchange_peers(peer_id);
                    }
                }
            }
            NodeBehaviourEvent::Identify(_) => {}
            NodeBehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            }) => {
                let probe = match result {
                    Ok(rtt) => {
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.rtt = Some(rtt);
                        }
                        peers::Probe::Answered
                    }
                    Err(ping::Failure::Unsupported) => peers::Probe::Unsupported,
                    Err(error) => {
                        tracing::info!(peer = %self.who(&peer), %error, "ping failed; closing the connection");
                        peers::Probe::Failed
                    }
                };
                self.swarm.behaviour_mut().peers.probed(connection, probe);
            }
            NodeBehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                let behaviour = self.swarm.behaviour_mut();
                for (peer, addr) in found {
                    match behaviour.peers.add(
                        peer,
                        std::slice::from_ref(&addr),
                        peers::Source::Mdns,
                    ) {
                        peers::Added::New => {
                            tracing::debug!(%peer, %addr, "discovered by mDNS");
                            behaviour.election.discovered(peer);
                        }
                        peers::Added::Full => {
                            tracing::warn!(%peer, "too many peers found by mDNS; ignoring")
                        }
                        peers::Added::Known | peers::Added::Ignored => {}
                    }
                }
            }
            NodeBehaviourEvent::Mdns(mdns::Event::Expired(gone)) => {
                let book = &mut self.swarm.behaviour_mut().peers;
                for (peer, addr) in gone {
                    book.expire(&peer, &addr);
                }
            }
            NodeBehaviourEvent::PeerExchange(event) => self.on_peer_exchange(event),
            NodeBehaviourEvent::Election(event) => self.on_election(event),
            NodeBehaviourEvent::IndexSync(event) => self.on_index_sync(event),
            NodeBehaviourEvent::Search(event) => self.on_search(event),
            NodeBehaviourEvent::Content(event) => self.on_content(event),
            NodeBehaviourEvent::Chunk(()) => {}
            NodeBehaviourEvent::Connections(never) | NodeBehaviourEvent::Peers(never) => {
                match never {}
            }
        }
    }
}

/// The common part of a request-response protocol's events: answers and failures of our
/// requests go to their waiting callers, bad inbound requests are logged, and an inbound
/// request is returned for the caller to route.
fn route<P: Rpc>(
    event: request_response::Event<P::Request, P::Response>,
    pending: &mut Pending,
) -> Option<(PeerId, P::Request, ResponseChannel<P::Response>)> {
    let what = P::NAME;
    let pending = P::pending(pending);
    use request_response::{Event, Message};
    match event {
        Event::Message {
            peer,
            message: Message::Request {
                request, channel, ..
            },
            ..
        } => return Some((peer, request, channel)),
        Event::Message {
            message:
                Message::Response {
                    request_id,
                    response,
                },
            ..
        } => {
            if let Some(reply) = pending.remove(&request_id) {
                let _ = reply.send(Ok(response));
            }
        }
        Event::OutboundFailure {
            peer,
            request_id,
            error,
            ..
        } => {
            tracing::debug!(%peer, %error, "{what} request failed");
            if let Some(reply) = pending.remove(&request_id) {
                let _ = reply.send(Err(RequestError::Failed(error.to_string())));
            }
        }
        Event::InboundFailure { peer, error, .. } => {
            tracing::debug!(%peer, %error, "bad {what} request");
        }
        Event::ResponseSent { .. } => {}
    }
    None
}

/// Starts a dial to a known address, unless its peer is connected or being dialed.
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_is_named_through_every_transport_layer() {
        let key = Keypair::generate_ed25519();
        let mut first = build_transport(&key, None, Verdicts::default()).unwrap();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        first.listen_on(ListenerId::next(), addr).unwrap();
        let bound = match futures::future::poll_fn(|cx| std::pin::Pin::new(&mut first).poll(cx))
            .await
        {
            libp2p::core::transport::TransportEvent::NewAddress { listen_addr, .. } => listen_addr,
            other => panic!("expected an address, got {other:?}"),
        };
        let mut second =
            build_transport(&key, Some(PreSharedKey::new([7; 32])), Verdicts::default()).unwrap();
        let error = second
            .listen_on(ListenerId::next(), bound.clone())
            .unwrap_err();
        let port = listen_error(bound.clone(), error).to_string();
        assert!(
            port.contains(&format!(
                "{bound}: port {} is already in use",
                tcp::socket_addr(&bound).unwrap().port()
            )),
            "{port}"
        );
    }
}
