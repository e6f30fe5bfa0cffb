//! One interface's mDNS: its two sockets, the queries it sends, the answers it gives (at most
//! one per [`ANSWER_GAP`], however many queries arrive; also unasked, when its addresses
//! change) and the answers it hears (at most
//! [`MAX_DATAGRAMS_PER_SECOND`] read; only addresses at the datagram's source kept), handed
//! to the behaviour through a bounded channel that drops what does not fit.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::Arc,
    time::Duration,
};

use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use rand::RngExt;
use socket2::{Domain, Socket, Type};
use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
    task::JoinHandle,
    time::{sleep_until, Instant},
};

use super::packet::{self, Announcement, Packet, MAX_PACKET};

/// mDNS's IPv4 group.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

/// mDNS's port.
pub const PORT: u16 = 5353;

/// The shortest time between two answers on one interface: a flood of queries makes this
/// node send at most one answer a second, never one per query.
pub const ANSWER_GAP: Duration = Duration::from_secs(1);

/// Most datagrams read per second per interface; the rest are dropped unread.
pub const MAX_DATAGRAMS_PER_SECOND: u32 = 500;

/// The first query goes out at once, the next after this, then twice as long each time up to
/// the query interval (until an answer is heard).
const FIRST_PROBE: Duration = Duration::from_millis(500);

/// What the node's interfaces share: who we are and what to announce.
#[derive(Debug)]
pub struct Shared {
    pub local: PeerId,
    /// Our listen addresses (the swarm's, kept current by the behaviour; an interface
    /// announces its own whenever they change).
    pub listen: watch::Receiver<Vec<Multiaddr>>,
    /// The TTL of our answers, in seconds.
    pub ttl: u32,
    pub query_interval: Duration,
}

/// Peers announced in one datagram from `ip`, with only their addresses at `ip`.
#[derive(Debug)]
pub struct Heard {
    pub ip: Ipv4Addr,
    pub peers: Vec<Announcement>,
}

/// Opens the sockets for the interface with address `addr` and starts its task.
pub fn spawn(
    addr: Ipv4Addr,
    shared: Arc<Shared>,
    heard: mpsc::Sender<Heard>,
) -> io::Result<JoinHandle<()>> {
    let recv = {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(socket2::Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
        socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)).into())?;
        socket.join_multicast_v4(&GROUP, &addr)?;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket.into())?
    };
    let send = {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(socket2::Protocol::UDP))?;
        socket.bind(&SocketAddr::from((addr, 0)).into())?;
        socket.set_multicast_if_v4(&addr)?;
        socket.set_multicast_ttl_v4(255)?;
        // Other nodes on this host hear us too.
        socket.set_multicast_loop_v4(true)?;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket.into())?
    };
    let task = Interface {
        addr,
        recv,
        send,
        shared,
        heard,
    };
    Ok(tokio::spawn(task.run()))
}

struct Interface {
    addr: Ipv4Addr,
    recv: UdpSocket,
    send: UdpSocket,
    shared: Arc<Shared>,
    heard: mpsc::Sender<Heard>,
}

impl Interface {
    async fn run(self) {
        let mut listen = self.shared.listen.clone();
        // Our addresses as last announced (an answer with none is not sent: nobody could dial
        // it, and nobody would ask again for minutes).
        let mut announced: Vec<Multiaddr> = Vec::new();
        let mut buf = vec![0u8; MAX_PACKET];
        let mut next_query = Instant::now();
        let mut probe = Some(FIRST_PROBE);
        let mut answer_at: Option<Instant> = None;
        let mut answer_peers = false;
        let mut answer_service = false;
        let mut last_answer: Option<Instant> = None;
        let mut window = (Instant::now(), 0u32);
        let mut dropped = 0u64;
        loop {
            let answer_due = answer_at.unwrap_or(next_query);
            tokio::select! {
                () = sleep_until(next_query) => {
                    self.send_all(&[packet::query()]).await;
                    next_query = Instant::now() + match probe {
                        Some(wait) if wait < self.shared.query_interval => {
                            probe = Some(wait * 2);
                            wait
                        }
                        _ => self.interval(),
                    };
                }
                changed = listen.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // New addresses are announced unasked (RFC 6762, 8.3): the others stopped
                    // asking once they heard anyone, and would not learn of them for minutes.
                    if self.own_addrs() != announced {
                        answer_peers = true;
                        if answer_at.is_none() {
                            let now = Instant::now();
                            let earliest = last_answer.map_or(now, |at| at + ANSWER_GAP);
                            answer_at = Some(earliest.max(now));
                        }
                    }
                }
                () = sleep_until(answer_due), if answer_at.is_some() => {
                    answer_at = None;
                    last_answer = Some(Instant::now());
                    let mut packets = Vec::new();
                    if std::mem::take(&mut answer_peers) {
                        announced = self.own_addrs();
                        if !announced.is_empty() {
                            packets = packet::response(self.shared.local, &announced, self.shared.ttl);
                        }
                    }
                    if std::mem::take(&mut answer_service) {
                        packets.push(packet::service_response(self.shared.ttl));
                    }
                    self.send_all(&packets).await;
                }
                read = self.recv.recv_from(&mut buf) => {
                    let (len, from) = match read {
                        Ok(read) => read,
                        Err(error) => {
                            // (Windows reports an ICMP "port unreachable" for an earlier
                            // send here.) Never a busy loop on a broken socket.
                            tracing::debug!(iface = %self.addr, %error, "mDNS read failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let now = Instant::now();
                    if now.duration_since(window.0) >= Duration::from_secs(1) {
                        if dropped > 0 {
                            tracing::warn!(iface = %self.addr, dropped, "mDNS flood: datagrams dropped unread");
                            dropped = 0;
                        }
                        window = (now, 0);
                    }
                    if window.1 >= MAX_DATAGRAMS_PER_SECOND {
                        dropped += 1;
                        continue;
                    }
                    window.1 += 1;
                    let SocketAddr::V4(from) = from else {
                        continue;
                    };
                    match packet::decode(&buf[..len]) {
                        Some(query @ (Packet::Query | Packet::ServiceQuery)) => {
                            if query == Packet::Query {
                                answer_peers = true;
                            } else {
                                answer_service = true;
                            }
                            if answer_at.is_none() {
                                let earliest = last_answer.map_or(now, |at| at + ANSWER_GAP);
                                answer_at = Some(earliest.max(now));
                            }
                        }
                        None => {}
                        Some(Packet::Response(peers)) => {
                            // Someone answered: no more fast probes.
                            let heard = self.take(*from.ip(), &peers);
                            if heard && probe.take().is_some() {
                                next_query = now + self.interval();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Hands the peers of one response to the behaviour; whether any address was kept.
    fn take(&self, ip: Ipv4Addr, peers: &[Announcement]) -> bool {
        let peers: Vec<Announcement> = peers
            .iter()
            .filter(|a| a.peer != self.shared.local)
            .filter_map(|a| {
                let addrs: Vec<Multiaddr> = a
                    .addrs
                    .iter()
                    .filter(|addr| at_source(addr, ip))
                    .cloned()
                    .collect();
                (!addrs.is_empty()).then(|| Announcement { addrs, ..a.clone() })
            })
            .collect();
        if peers.is_empty() {
            return false;
        }
        if self.heard.try_send(Heard { ip, peers }).is_err() {
            tracing::debug!(iface = %self.addr, "mDNS: the node is busy; an answer was dropped");
        }
        true
    }

    /// Our listen addresses at this interface's IP.
    fn own_addrs(&self) -> Vec<Multiaddr> {
        self.shared
            .listen
            .borrow()
            .iter()
            .filter(|addr| matches!(addr.iter().next(), Some(Protocol::Ip4(ip)) if ip == self.addr))
            .cloned()
            .collect()
    }

    async fn send_all(&self, packets: &[Vec<u8>]) {
        let to = SocketAddrV4::new(GROUP, PORT);
        for packet in packets {
            if let Err(error) = self.send.send_to(packet, to).await {
                tracing::debug!(iface = %self.addr, %error, "mDNS send failed");
            }
        }
    }

    /// The query interval with up to 1 % jitter, so a room of nodes does not ask in step.
    fn interval(&self) -> Duration {
        let interval = self.shared.query_interval;
        let jitter = rand::rng().random_range(0..=interval.as_millis() as u64 / 100);
        interval + Duration::from_millis(jitter)
    }
}

/// The source rule: an address is taken only if it is `/ip4/<the datagram's source>/tcp/<port>`.
/// An answer cannot point this node at a third host, only at the host it came from (or
/// claims to: UDP sources can be forged, see docs/security.md), and only at TCP, the one
/// transport the node speaks.
pub fn at_source(addr: &Multiaddr, source: Ipv4Addr) -> bool {
    let mut parts = addr.iter();
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port)), None) if ip == source && port != 0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tcp_addresses_at_the_source_are_taken() {
        let source = Ipv4Addr::new(10, 0, 0, 7);
        let ok = |s: &str| at_source(&s.parse().unwrap(), source);
        assert!(ok("/ip4/10.0.0.7/tcp/4747"));
        assert!(!ok("/ip4/10.0.0.8/tcp/4747"), "another host");
        assert!(
            !ok("/ip4/127.0.0.1/tcp/4747"),
            "the sender's loopback is ours"
        );
        assert!(!ok("/ip4/10.0.0.7/tcp/0"));
        assert!(!ok("/ip4/10.0.0.7/udp/4747/quic-v1"));
        assert!(!ok("/ip4/10.0.0.7/tcp/4747/ws"));
        assert!(!ok("/ip6/::1/tcp/4747"));
        assert!(!ok("/dns4/example.invalid/tcp/4747"));
    }
}
