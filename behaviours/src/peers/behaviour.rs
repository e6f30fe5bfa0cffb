//! The peer-handling policy as a libp2p behaviour; see [`Behaviour`].

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p::{
    core::{transport::PortUse, Endpoint},
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        dummy, CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionId, DialFailure,
        FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

use super::{Added, Book, Source};

/// How long a connection may go without an answered probe before it is closed, by default.
/// (With ping every 5 s; a vanished peer is found sooner by TCP keepalive, this finds a hung
/// one, whose kernel still answers the keepalive.)
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a pinned address without a connection is dialed again.
pub const PIN_REDIAL: Duration = Duration::from_secs(2);

/// How many of the book's dials may be in flight at once. With the swarm's dial concurrency
/// factor of 4 (addresses tried at once per dial), at most 64 connection attempts: a burst of
/// forged peers (mDNS, peer exchange) is dialed a few at a time, never all at once.
pub const MAX_DIALS: usize = 16;

/// How many addresses [`Behaviour::pin`] keeps (they come from the user; bounded all the same).
pub const MAX_PINS: usize = 64;

/// What a liveness probe (libp2p ping) found on one connection; see [`Behaviour::probed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The peer answered: the connection is alive.
    Answered,
    /// The peer does not speak the probe's protocol: its liveness is not judged by probes.
    Unsupported,
    /// The probe failed (a timeout, a broken stream): the connection is closed at once.
    Failed,
}

/// Why [`Behaviour::pin`] refused an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinError {
    /// The address names this node.
    OwnAddress(Multiaddr),
    /// [`MAX_PINS`] addresses are pinned already.
    Full,
}

impl std::fmt::Display for PinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinError::OwnAddress(addr) => write!(f, "{addr} is this node's own address"),
            PinError::Full => write!(f, "at most {MAX_PINS} peer addresses can be kept connected"),
        }
    }
}

impl std::error::Error for PinError {}

/// An address the user named: kept connected.
struct Pin {
    addr: Multiaddr,
    /// The peer behind it: from a `/p2p/` suffix, or learned on its first connection.
    peer: Option<PeerId>,
    /// Our dial to it in flight.
    dial: Option<ConnectionId>,
}

/// The peer-handling policy of the [`peers`](super) module as a libp2p behaviour:
/// - it dials the address book's peers when their time comes, follows the swarm's connections
///   and failed dials itself, and offers the book's addresses for a dial by peer id
///   ([`NetworkBehaviour::handle_pending_outbound_connection`]), the way rust-libp2p's mDNS
///   behaviour keeps its own peers;
/// - it keeps the addresses the user named ([`Behaviour::pin`], `--peer`) connected: dialed at
///   once, and again every [`PIN_REDIAL`] while no connection to them is open;
/// - it closes a connection that gave no sign of life for its liveness timeout (default
///   [`LIVENESS_TIMEOUT`]); the node reports each probe's outcome ([`Behaviour::probed`],
///   from libp2p ping).
pub struct Behaviour {
    local: PeerId,
    book: Book,
    /// Peers with at least one established connection (the book may learn of a peer after
    /// it connected: it must not dial it again).
    connected: HashSet<PeerId>,
    /// Wakes [`Behaviour::poll`] when the book's next dial is due.
    timer: Option<Delay>,
    /// Wakes [`Behaviour::poll`] when the node adds a peer (from outside the swarm's poll).
    waker: Option<Waker>,
    /// Our dials in flight: only their failures count against a peer (another behaviour's
    /// dial that fails, or one refused because ours is under way, says nothing about it).
    dials: HashSet<ConnectionId>,
    pins: Vec<Pin>,
    /// When the pins without a connection are dialed next.
    next_pin_round: Instant,
    /// Every open connection, with its peer and when it last proved alive (established, or a
    /// probe answered); `None` when its liveness is not judged ([`Probe::Unsupported`]).
    alive: HashMap<ConnectionId, (PeerId, Option<Instant>)>,
    liveness_timeout: Duration,
    pending: VecDeque<ToSwarm<Infallible, Infallible>>,
}

impl Behaviour {
    /// The behaviour of node `local`; `seed` drives the book's jitter.
    pub fn new(local: PeerId, seed: u64) -> Self {
        Self {
            local,
            book: Book::new(local, seed),
            connected: HashSet::new(),
            timer: None,
            waker: None,
            dials: HashSet::new(),
            pins: Vec::new(),
            next_pin_round: Instant::now(),
            alive: HashMap::new(),
            liveness_timeout: LIVENESS_TIMEOUT,
            pending: VecDeque::new(),
        }
    }

    /// Closes connections without an answered probe for `timeout` instead of
    /// [`LIVENESS_TIMEOUT`].
    pub fn with_liveness_timeout(mut self, timeout: Duration) -> Self {
        self.liveness_timeout = timeout;
        self
    }

    /// Keeps `addr` (optionally ending in `/p2p/<peer id>`) connected: dialed at the next poll,
    /// and again every [`PIN_REDIAL`] while no connection to it is open. Pinning an address
    /// twice changes nothing.
    pub fn pin(&mut self, addr: Multiaddr) -> Result<(), PinError> {
        let peer = peer_of(&addr);
        if peer == Some(self.local) {
            return Err(PinError::OwnAddress(addr));
        }
        if self.pins.iter().any(|p| p.addr == addr) {
            return Ok(());
        }
        if self.pins.len() >= MAX_PINS {
            return Err(PinError::Full);
        }
        self.pins.push(Pin {
            addr,
            peer,
            dial: None,
        });
        self.next_pin_round = Instant::now();
        self.wake();
        Ok(())
    }

    /// Reports what a liveness probe found on `connection`; see [`Probe`].
    pub fn probed(&mut self, connection: ConnectionId, probe: Probe) {
        let Some((peer, last)) = self.alive.get_mut(&connection) else {
            return;
        };
        match probe {
            Probe::Answered => *last = Some(Instant::now()),
            Probe::Unsupported => *last = None,
            Probe::Failed => {
                tracing::debug!(%peer, "a liveness probe failed; closing the connection");
                let peer_id = *peer;
                *last = None;
                self.pending.push_back(ToSwarm::CloseConnection {
                    peer_id,
                    connection: CloseConnection::One(connection),
                });
                self.wake();
            }
        }
    }

    fn wake(&mut self) {
        self.timer = None;
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// `source` names `peer` at `addrs`; see [`Book::add`]. The dial, if one is due, goes out
    /// at the next poll.
    pub fn add(&mut self, peer: PeerId, addrs: &[Multiaddr], source: Source) -> Added {
        let added = self.book.add(peer, addrs, source, Instant::now());
        if added.held() && self.connected.contains(&peer) {
            self.book.connected(&peer);
        }
        // A peer due at once is dialed now, not at the next event that wakes the swarm.
        self.wake();
        added
    }

    /// mDNS no longer lists `addr` of `peer`.
    pub fn expire(&mut self, peer: &PeerId, addr: &Multiaddr) {
        self.book.expire(peer, addr);
    }

    /// The book.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// Dials the pins that have no connection and no dial under way.
    fn dial_pins(&mut self) {
        for pin in &mut self.pins {
            let connected = pin.peer.is_some_and(|p| self.connected.contains(&p));
            if connected || pin.dial.is_some() {
                continue;
            }
            let opts = match pin.peer {
                Some(peer) => DialOpts::peer_id(peer)
                    .addresses(vec![pin.addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .allocate_new_port()
                    .build(),
                None => DialOpts::unknown_peer_id()
                    .address(pin.addr.clone())
                    .allocate_new_port()
                    .build(),
            };
            pin.dial = Some(opts.connection_id());
            self.pending.push_back(ToSwarm::Dial { opts });
        }
    }

    /// Whether some pin waits for its next round (not connected, no dial under way).
    fn pins_waiting(&self) -> bool {
        self.pins
            .iter()
            .any(|p| p.dial.is_none() && !p.peer.is_some_and(|peer| self.connected.contains(&peer)))
    }

    /// Closes the connections silent for the liveness timeout.
    fn close_silent(&mut self, now: Instant) {
        for (id, (peer, last)) in &mut self.alive {
            if last.is_some_and(|t| now.saturating_duration_since(t) >= self.liveness_timeout) {
                tracing::info!(
                    %peer,
                    "no liveness probe answered for {:?}; closing the connection",
                    self.liveness_timeout
                );
                *last = None;
                self.pending.push_back(ToSwarm::CloseConnection {
                    peer_id: *peer,
                    connection: CloseConnection::One(*id),
                });
            }
        }
    }

    /// When poll has work next: a book dial, a pin round or a liveness deadline.
    fn next_wake(&self) -> Option<Instant> {
        let silent = self
            .alive
            .values()
            .filter_map(|(_, last)| last.map(|t| t + self.liveness_timeout))
            .min();
        let pins = self.pins_waiting().then_some(self.next_pin_round);
        // At the dial cap the book waits for a dial to end (an event), not for a time.
        let book = self
            .book
            .next_due()
            .filter(|_| self.dials.len() < MAX_DIALS);
        [book, silent, pins].into_iter().flatten().min()
    }
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        // Only for a dial that names no address (by peer id alone): adding ours to a dial that
        // has them (our own) would dial one address twice at once, and one of the two
        // connections would be torn down in its handshake.
        if !addresses.is_empty() {
            return Ok(Vec::new());
        }
        Ok(peer.map(|p| self.book.addrs(&p)).unwrap_or_default())
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        let now = Instant::now();
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.dials.remove(&e.connection_id);
                for pin in &mut self.pins {
                    if pin.dial == Some(e.connection_id) {
                        pin.dial = None;
                        pin.peer = Some(e.peer_id);
                    }
                }
                self.connected.insert(e.peer_id);
                self.alive.insert(e.connection_id, (e.peer_id, Some(now)));
                self.book.connected(&e.peer_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                remaining_established,
                ..
            }) => {
                self.alive.remove(&connection_id);
                if remaining_established == 0 {
                    self.connected.remove(&peer_id);
                    self.book.disconnected(&peer_id, now);
                }
            }
            FromSwarm::DialFailure(DialFailure {
                peer_id,
                connection_id,
                ..
            }) => {
                for pin in &mut self.pins {
                    if pin.dial == Some(connection_id) {
                        pin.dial = None;
                    }
                }
                if let Some(peer) = peer_id {
                    if self.dials.remove(&connection_id) {
                        self.book.dial_failed(&peer, now);
                    }
                }
            }
            _ => return,
        }
        self.timer = None;
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Poll::Ready(event);
            }
            let now = Instant::now();
            let room = MAX_DIALS.saturating_sub(self.dials.len());
            for (peer, addrs) in self.book.due(now, room) {
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    // Dialing from the listen port makes two nodes that dial each other at
                    // once meet in one TCP simultaneous open, which the handshake cannot
                    // survive.
                    .allocate_new_port()
                    .build();
                self.dials.insert(opts.connection_id());
                self.pending.push_back(ToSwarm::Dial { opts });
            }
            if self.pins_waiting() && now >= self.next_pin_round {
                self.next_pin_round = now + PIN_REDIAL;
                self.dial_pins();
            }
            self.close_silent(now);
            if !self.pending.is_empty() {
                continue;
            }
            self.waker = Some(cx.waker().clone());
            let Some(at) = self.next_wake() else {
                self.timer = None;
                return Poll::Pending;
            };
            let timer = self
                .timer
                .get_or_insert_with(|| Delay::new(at.saturating_duration_since(now)));
            if timer.poll_unpin(cx).is_pending() {
                return Poll::Pending;
            }
            self.timer = None;
        }
    }
}
