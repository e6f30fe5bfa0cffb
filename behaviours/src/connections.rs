//! Connection policy: one live connection per peer, kept alive while the peer is an iwant node.
//!
//! Two nodes that discover each other at the same moment both dial, which leaves two
//! connections between them. Both ends apply the same deterministic rule to pick the survivor, so
//! they never close different ones: keep the oldest connection *dialed by the peer with the
//! smaller peer id*; if there is none, keep the oldest. Everything else is closed, and always by
//! the end that *accepted* it: a dialer counts its connection established one step before the
//! listener does (multistream-select's lazy negotiation), so a dialer that closed its redundant
//! connection at once would cut the listener's handshake off ("broken pipe"), a failed handshake
//! in the listener's log for every simultaneous dial. The listener has finished its handshake
//! when it closes, and so has the dialer. Each connection has exactly one listener, so each
//! redundant connection is closed exactly once.
//!
//! One remote IP address may hold at most [`MAX_INBOUND_PER_IP`] inbound connections at once,
//! handshakes included ([`Behaviour::with_max_inbound_per_ip`]): a flood of half-open
//! connections from one machine takes a few descriptors, not all of them. Loopback is exempt
//! (it is this machine's own users).
//!
//! libp2p closes connections that carry no streams after the swarm's idle timeout, and ping
//! streams do not count. Connections to peers that the node marks with
//! [`Behaviour::keep_alive`] (peers that identified as iwant nodes) stay open instead, so a
//! node keeps its neighbours; connections to other peers close when idle.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    fmt,
    net::IpAddr,
    task::{Context, Poll},
};

use libp2p::{
    core::{transport::PortUse, upgrade::DeniedUpgrade, Endpoint},
    multiaddr::Protocol,
    swarm::{
        handler::ConnectionEvent, CloseConnection, ConnectionDenied, ConnectionHandler,
        ConnectionHandlerEvent, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler,
        SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

/// Inbound connections one remote IP address may hold at once, by default.
pub const MAX_INBOUND_PER_IP: usize = 16;

/// Why an inbound connection was refused: its address holds enough already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyFromOneAddress {
    /// The remote address.
    pub ip: IpAddr,
    /// Its limit.
    pub limit: usize,
}

impl fmt::Display for TooManyFromOneAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} already holds {} inbound connections",
            self.ip, self.limit
        )
    }
}

impl std::error::Error for TooManyFromOneAddress {}

/// See the [module docs](self).
pub struct Behaviour {
    local_peer_id: PeerId,
    /// Open connections per peer, oldest first, with our role on each.
    connections: HashMap<PeerId, Vec<(ConnectionId, Endpoint)>>,
    /// Peers whose connections are kept alive; only peers with an open connection.
    kept: HashSet<PeerId>,
    /// The remote IP of each inbound connection counted against its address, from its
    /// handshake on.
    inbound: HashMap<ConnectionId, IpAddr>,
    /// Inbound connections per remote IP (loopback not counted).
    per_ip: HashMap<IpAddr, usize>,
    max_inbound_per_ip: usize,
    pending: VecDeque<ToSwarm<Infallible, bool>>,
}

impl Behaviour {
    /// A policy for the node `local_peer_id`.
    pub fn new(local_peer_id: PeerId) -> Self {
        Self {
            local_peer_id,
            connections: HashMap::new(),
            kept: HashSet::new(),
            inbound: HashMap::new(),
            per_ip: HashMap::new(),
            max_inbound_per_ip: MAX_INBOUND_PER_IP,
            pending: VecDeque::new(),
        }
    }

    /// Lets one remote IP address hold at most `limit` inbound connections instead of
    /// [`MAX_INBOUND_PER_IP`].
    pub fn with_max_inbound_per_ip(mut self, limit: usize) -> Self {
        self.max_inbound_per_ip = limit;
        self
    }

    /// An inbound connection from `remote` is in its handshake: counted, or refused.
    fn admit(&mut self, id: ConnectionId, remote: &Multiaddr) -> Result<(), TooManyFromOneAddress> {
        let Some(ip) = ip_of(remote) else {
            return Ok(());
        };
        if ip.is_loopback() {
            return Ok(());
        }
        let count = self.per_ip.entry(ip).or_default();
        if *count >= self.max_inbound_per_ip {
            return Err(TooManyFromOneAddress {
                ip,
                limit: self.max_inbound_per_ip,
            });
        }
        *count += 1;
        self.inbound.insert(id, ip);
        Ok(())
    }

    /// A counted inbound connection closed or failed.
    fn release(&mut self, id: ConnectionId) {
        let Some(ip) = self.inbound.remove(&id) else {
            return;
        };
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Keeps the connections to `peer` open while it stays connected. Forgotten when its last
    /// connection closes. Does nothing if `peer` is not connected.
    pub fn keep_alive(&mut self, peer: PeerId) {
        let Some(conns) = self.connections.get(&peer) else {
            return;
        };
        if self.kept.insert(peer) {
            for (id, _) in conns {
                self.pending.push_back(ToSwarm::NotifyHandler {
                    peer_id: peer,
                    handler: NotifyHandler::One(*id),
                    event: true,
                });
            }
        }
    }

    /// Whether the connections to `peer` are kept alive.
    pub fn is_kept_alive(&self, peer: &PeerId) -> bool {
        self.kept.contains(peer)
    }

    fn on_established(&mut self, peer: PeerId, id: ConnectionId, role: Endpoint) {
        let conns = self.connections.entry(peer).or_default();
        conns.push((id, role));
        for close in to_close(&self.local_peer_id, &peer, conns) {
            tracing::debug!(%peer, connection = %close, "closing a duplicate connection");
            self.pending.push_back(ToSwarm::CloseConnection {
                peer_id: peer,
                connection: CloseConnection::One(close),
            });
        }
    }

    fn on_closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(conns) = self.connections.get_mut(&peer) {
            conns.retain(|(c, _)| *c != id);
            if conns.is_empty() {
                self.connections.remove(&peer);
                self.kept.remove(&peer);
            }
        }
    }
}

/// The connections to `remote` that this end closes, given ours oldest first: the redundant
/// ones that this end accepted (see the [module docs](self) for why the listener closes).
///
/// The survivor is the oldest connection dialed by the smaller of the two peer ids, or the
/// oldest of all when the smaller peer dialed none. Both ends compute the same survivor because
/// each side's role on a connection is the mirror of the other's, and where "oldest" could
/// differ between the ends (several connections dialed by the same peer), only one end, the
/// listener of them all, decides.
pub fn to_close(
    local: &PeerId,
    remote: &PeerId,
    conns: &[(ConnectionId, Endpoint)],
) -> Vec<ConnectionId> {
    if conns.len() < 2 {
        return Vec::new();
    }
    let preferred = if local < remote {
        Endpoint::Dialer
    } else {
        Endpoint::Listener
    };
    let keep = conns
        .iter()
        .find(|(_, role)| *role == preferred)
        .unwrap_or(&conns[0])
        .0;
    conns
        .iter()
        .filter(|(id, role)| *id != keep && *role == Endpoint::Listener)
        .map(|(id, _)| *id)
        .collect()
}

/// The IP address an address names (its first `/ip4` or `/ip6`), if any.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admit(id, remote).map_err(|refused| {
            tracing::debug!(%refused, "refused an inbound connection");
            ConnectionDenied::new(refused)
        })
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler {
            keep_alive: self.kept.contains(&peer),
        })
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler {
            keep_alive: self.kept.contains(&peer),
        })
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.on_established(e.peer_id, e.connection_id, e.endpoint.to_endpoint())
            }
            FromSwarm::ConnectionClosed(e) => {
                self.release(e.connection_id);
                self.on_closed(e.peer_id, e.connection_id)
            }
            FromSwarm::ListenFailure(e) => self.release(e.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.pending.pop_front() {
            Some(action) => Poll::Ready(action),
            None => Poll::Pending,
        }
    }
}

/// The per-connection half of [`Behaviour`]: opens no streams, only holds the keep-alive flag.
pub struct Handler {
    keep_alive: bool,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = bool;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep_alive
    }

    fn on_behaviour_event(&mut self, keep_alive: bool) {
        self.keep_alive = keep_alive;
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        _: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<ConnectionId> {
        (0..n)
            .map(|_| ConnectionId::new_unchecked(rand_id()))
            .collect()
    }

    fn rand_id() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    fn ordered_pair() -> (PeerId, PeerId) {
        let (a, b) = (PeerId::random(), PeerId::random());
        if a < b {
            (a, b)
        } else {
            (b, a)
        }
    }

    #[test]
    fn single_connection_is_never_closed() {
        let (small, big) = ordered_pair();
        let c = ids(1);
        assert!(to_close(&small, &big, &[(c[0], Endpoint::Listener)]).is_empty());
        assert!(to_close(&big, &small, &[(c[0], Endpoint::Dialer)]).is_empty());
    }

    #[test]
    fn only_the_end_that_accepted_the_redundant_connection_closes_it() {
        let (small, big) = ordered_pair();
        let c = ids(2);
        // c[0] was dialed by `big`, c[1] by `small`; each end saw them in a different order.
        // Both keep c[1]; `small` accepted c[0] and closes it, `big` dialed it and leaves it.
        let on_small = to_close(
            &small,
            &big,
            &[(c[0], Endpoint::Listener), (c[1], Endpoint::Dialer)],
        );
        let on_big = to_close(
            &big,
            &small,
            &[(c[1], Endpoint::Listener), (c[0], Endpoint::Dialer)],
        );
        assert_eq!(on_small, vec![c[0]]);
        assert!(on_big.is_empty());
        // Seen in the other order, the decision is the same.
        let on_big = to_close(
            &big,
            &small,
            &[(c[0], Endpoint::Dialer), (c[1], Endpoint::Listener)],
        );
        assert!(on_big.is_empty());
    }

    #[test]
    fn oldest_survives_when_the_smaller_peer_dialed_none() {
        let (small, big) = ordered_pair();
        let c = ids(3);
        // `big` dialed all three: it closes none, `small` (their listener) keeps its oldest.
        let on_big = [
            (c[0], Endpoint::Dialer),
            (c[1], Endpoint::Dialer),
            (c[2], Endpoint::Dialer),
        ];
        assert!(to_close(&big, &small, &on_big).is_empty());
        let on_small = [
            (c[1], Endpoint::Listener),
            (c[0], Endpoint::Listener),
            (c[2], Endpoint::Listener),
        ];
        assert_eq!(to_close(&small, &big, &on_small), vec![c[0], c[2]]);
    }
}
