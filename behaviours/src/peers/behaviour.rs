//! The address book as a libp2p behaviour: it dials the book's peers when their time comes,
//! follows the swarm's connections and failed dials itself, and offers the book's addresses
//! for a dial by peer id ([`NetworkBehaviour::handle_pending_outbound_connection`]), the way
//! rust-libp2p's mDNS behaviour keeps its own peers.

use std::{
    collections::{HashSet, VecDeque},
    convert::Infallible,
    task::{Context, Poll, Waker},
    time::Instant,
};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p::{
    core::{transport::PortUse, Endpoint},
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        dummy, ConnectionClosed, ConnectionDenied, ConnectionId, DialFailure, FromSwarm,
        NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

use super::{Added, Book, Source};

/// Dials the address book's peers; see the [`peers`](super) module.
pub struct Behaviour {
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
    pending: VecDeque<ToSwarm<Infallible, Infallible>>,
}

impl Behaviour {
    /// The behaviour of node `local`; `seed` drives the book's jitter.
    pub fn new(local: PeerId, seed: u64) -> Self {
        Self {
            book: Book::new(local, seed),
            connected: HashSet::new(),
            timer: None,
            waker: None,
            dials: HashSet::new(),
            pending: VecDeque::new(),
        }
    }

    /// `source` names `peer` at `addrs`; see [`Book::add`]. The dial, if one is due, goes out
    /// at the next poll.
    pub fn add(&mut self, peer: PeerId, addrs: &[Multiaddr], source: Source) -> Added {
        let added = self.book.add(peer, addrs, source, Instant::now());
        if added.held() && self.connected.contains(&peer) {
            self.book.connected(&peer);
        }
        self.timer = None;
        // A peer due at once is dialed now, not at the next event that wakes the swarm.
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
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
                self.connected.insert(e.peer_id);
                self.book.connected(&e.peer_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                remaining_established: 0,
                ..
            }) => {
                self.connected.remove(&peer_id);
                self.book.disconnected(&peer_id, now);
            }
            FromSwarm::DialFailure(DialFailure {
                peer_id: Some(peer),
                connection_id,
                ..
            }) => {
                if !self.dials.remove(&connection_id) {
                    return;
                }
                self.book.dial_failed(&peer, now);
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
            for (peer, addrs) in self.book.due(now) {
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
            if !self.pending.is_empty() {
                continue;
            }
            self.waker = Some(cx.waker().clone());
            let Some(at) = self.book.next_due() else {
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
