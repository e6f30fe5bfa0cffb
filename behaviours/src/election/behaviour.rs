//! The election across all connections: feeds the [`ElectionState`] machine and carries out its
//! actions.

use std::{
    collections::{hash_map::RandomState, HashMap, HashSet, VecDeque},
    hash::{BuildHasher, Hasher},
    task::{Context, Poll},
    time::Instant,
};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p::{
    core::{transport::PortUse, Endpoint},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

use super::{
    handler::{self, Handler},
    protocol::Message,
    state::{Action, ElectionState, Input, Role},
    Config,
};

/// What the election tells the rest of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// This node now follows `leader` (this node itself when it leads) in `term`. Also
    /// reported when the same leader moves to a higher term.
    LeaderElected {
        /// The leader.
        leader: PeerId,
        /// Its term.
        term: u64,
    },
    /// This node lost its leader and follows nobody until the next
    /// [`Event::LeaderElected`]; `term` was the lost leader's term.
    LeaderLost {
        /// The term of the lost leader.
        term: u64,
    },
    /// After [`Behaviour::leave`]: the goodbyes were written (or there was nobody to tell, or
    /// their connections closed). The swarm can be dropped.
    Left,
}

/// See the [module docs](super).
pub struct Behaviour {
    state: ElectionState,
    /// Connections per peer on which the peer accepted the election stream, oldest first.
    supported: HashMap<PeerId, Vec<ConnectionId>>,
    /// After [`Behaviour::leave`]: the peers whose goodbye is not written yet.
    leaving: Option<HashSet<PeerId>>,
    pending: VecDeque<ToSwarm<Event, Message>>,
    timer: Option<Delay>,
}

impl Behaviour {
    /// The election for the node `local`.
    pub fn new(local: PeerId, config: Config) -> Self {
        let seed = {
            let mut h = RandomState::new().build_hasher();
            h.write(&local.to_bytes());
            h.finish()
        };
        let state = ElectionState::new(local, config, seed, Instant::now());
        let timer = state
            .next_deadline()
            .map(|d| Delay::new(d.saturating_duration_since(Instant::now())));
        Self {
            state,
            supported: HashMap::new(),
            leaving: None,
            pending: VecDeque::new(),
            timer,
        }
    }

    /// The leader this node follows (itself when it leads), if any.
    pub fn leader(&self) -> Option<PeerId> {
        self.state.leader()
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.state.term()
    }

    /// The peers that take part in the election (connected, speaking the protocol).
    pub fn participants(&self) -> impl Iterator<Item = &PeerId> {
        self.state.peers().iter()
    }

    /// Tells the election that `peer` was found (mDNS, peer exchange) and is not connected
    /// yet: until this node has known a leader, it waits for such peers to arrive before it
    /// stands (see [`Input::PeerDiscovered`]).
    pub fn discovered(&mut self, peer: PeerId) {
        self.input(Input::PeerDiscovered(peer));
    }

    /// Tells the election that `peer`, this node's leader, does not serve: it stops following
    /// it and ignores it for a while (see [`Input::Depose`]).
    pub fn depose(&mut self, peer: PeerId) {
        self.input(Input::Depose(peer));
    }

    /// Shuts the election down: a leader sends a goodbye to every participant. Reports
    /// [`Event::Left`] once they are written; keep polling the swarm until then (with a
    /// deadline). After this the node neither votes nor leads.
    pub fn leave(&mut self) {
        if self.leaving.is_some() {
            return;
        }
        let actions = self.state.handle(Instant::now(), Input::Leave);
        let mut waiting = HashSet::new();
        for action in &actions {
            if let Action::Send {
                to,
                message: Message::Goodbye { .. },
            } = action
            {
                waiting.insert(*to);
            }
        }
        self.apply(actions);
        self.timer = None;
        if waiting.is_empty() {
            self.pending.push_back(ToSwarm::GenerateEvent(Event::Left));
        }
        self.leaving = Some(waiting);
    }

    fn input(&mut self, input: Input) {
        let now = Instant::now();
        let before = self.state.term();
        let cause = match &input {
            Input::Received { from, message } => Some((*from, *message)),
            _ => None,
        };
        let actions = self.state.handle(now, input);
        if self.state.term() != before {
            let role = match self.state.role() {
                Role::Follower { .. } => "follower",
                Role::Candidate { .. } => "candidate",
                Role::Leader { .. } => "leader",
                Role::Left => "left",
            };
            let participants = self.state.peers().len();
            match cause {
                Some((from, message)) => tracing::debug!(
                    term = self.state.term(), role, participants, %from, ?message,
                    "new election term"
                ),
                None => tracing::debug!(
                    term = self.state.term(),
                    role,
                    participants,
                    "new election term"
                ),
            }
        }
        self.apply(actions);
        self.timer = self
            .state
            .next_deadline()
            .map(|d| Delay::new(d.saturating_duration_since(now)));
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { to, message } => {
                    let Some(connection) = self.supported.get(&to).and_then(|c| c.first()) else {
                        continue;
                    };
                    self.pending.push_back(ToSwarm::NotifyHandler {
                        peer_id: to,
                        handler: NotifyHandler::One(*connection),
                        event: message,
                    });
                }
                Action::LeaderElected { leader, term } => {
                    self.pending
                        .push_back(ToSwarm::GenerateEvent(Event::LeaderElected {
                            leader,
                            term,
                        }))
                }
                Action::LeaderLost { term } => self
                    .pending
                    .push_back(ToSwarm::GenerateEvent(Event::LeaderLost { term })),
            }
        }
    }

    /// `peer` will get no goodbye: written, or its connection closed.
    fn goodbye_done(&mut self, peer: &PeerId) {
        if let Some(waiting) = &mut self.leaving {
            if waiting.remove(peer) && waiting.is_empty() {
                self.pending.push_back(ToSwarm::GenerateEvent(Event::Left));
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new())
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(e) = event {
            let Some(conns) = self.supported.get_mut(&e.peer_id) else {
                return;
            };
            conns.retain(|c| *c != e.connection_id);
            if conns.is_empty() {
                self.supported.remove(&e.peer_id);
                self.input(Input::PeerDisconnected(e.peer_id));
                self.goodbye_done(&e.peer_id);
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            handler::Event::Supported => {
                let conns = self.supported.entry(peer).or_default();
                if !conns.contains(&connection) {
                    conns.push(connection);
                }
                if conns.len() == 1 {
                    tracing::debug!(%peer, "election participant connected");
                    self.input(Input::PeerConnected(peer));
                }
            }
            handler::Event::Unsupported => {
                let Some(conns) = self.supported.get_mut(&peer) else {
                    tracing::debug!(%peer, "peer does not take part in the election");
                    return;
                };
                conns.retain(|c| *c != connection);
                if conns.is_empty() {
                    self.supported.remove(&peer);
                    self.input(Input::PeerDisconnected(peer));
                    self.goodbye_done(&peer);
                }
            }
            handler::Event::Received(message) => {
                if !self.supported.contains_key(&peer) {
                    // Its stream to us works, ours to it is not up yet: wait for ours, so
                    // that replies can be sent.
                    tracing::trace!(%peer, ?message, "election message before our stream");
                    return;
                }
                tracing::trace!(%peer, ?message, "election message");
                self.input(Input::Received {
                    from: peer,
                    message,
                });
            }
            handler::Event::GoodbyeSent => self.goodbye_done(&peer),
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Poll::Ready(event);
            }
            match &mut self.timer {
                Some(timer) => match timer.poll_unpin(cx) {
                    Poll::Ready(()) => self.input(Input::Tick),
                    Poll::Pending => return Poll::Pending,
                },
                None => return Poll::Pending,
            }
        }
    }
}
