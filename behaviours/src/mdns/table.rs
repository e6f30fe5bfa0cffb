//! What mDNS found: peers and addresses with their expiry. A plain struct, clock-driven by
//! its callers (`now`), bounded so that forged answers cannot grow it or keep it busy.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId};

/// The longest an address is kept without being announced again, whatever TTL it came with.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 60);

/// The longest an address of a peer this node never connected to is kept without being
/// announced again: a forged burst is forgotten in minutes.
pub const UNPROVEN_TTL: Duration = Duration::from_secs(2 * 60);

/// Most peers in the table.
pub const MAX_PEERS: usize = 1024;

/// Most peers announced from one IP address (a host may run a few nodes; a forger aiming
/// the LAN at one host gets no more).
pub const MAX_PEERS_PER_IP: usize = 8;

/// Most addresses kept per peer.
pub const MAX_ADDRS: usize = 8;

/// Why [`Table::heard`] did not take a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The table holds [`MAX_PEERS`] peers.
    Full,
    /// [`MAX_PEERS_PER_IP`] peers were announced from this address already.
    IpFull,
}

#[derive(Debug)]
struct Found {
    addr: Multiaddr,
    /// The packet's source (the address's own IP, by the source rule).
    ip: Ipv4Addr,
    heard: Instant,
    ttl: Duration,
}

#[derive(Debug, Default)]
struct Peer {
    addrs: Vec<Found>,
    /// A connection to it was established: its addresses keep their announced TTL.
    proven: bool,
}

impl Peer {
    fn expires(&self, found: &Found) -> Instant {
        let cap = if self.proven { MAX_TTL } else { UNPROVEN_TTL };
        found.heard + found.ttl.min(cap)
    }
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct Table {
    peers: HashMap<PeerId, Peer>,
    per_ip: HashMap<Ipv4Addr, HashSet<PeerId>>,
}

impl Table {
    /// `peer` was announced from `ip` at `addrs` (all at `ip`) for `ttl`; returns the
    /// addresses that are new. A TTL of 0 forgets those addresses at the next
    /// [`Table::expire`].
    pub fn heard(
        &mut self,
        now: Instant,
        ip: Ipv4Addr,
        peer: PeerId,
        addrs: &[Multiaddr],
        ttl: Duration,
    ) -> Result<Vec<Multiaddr>, Refused> {
        let from_ip = self.per_ip.get(&ip);
        if !from_ip.is_some_and(|peers| peers.contains(&peer)) {
            if from_ip.is_some_and(|peers| peers.len() >= MAX_PEERS_PER_IP) {
                return Err(Refused::IpFull);
            }
            if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
                return Err(Refused::Full);
            }
        }
        let entry = self.peers.entry(peer).or_default();
        let mut new = Vec::new();
        for addr in addrs {
            if let Some(found) = entry.addrs.iter_mut().find(|f| f.addr == *addr) {
                found.heard = now;
                found.ttl = ttl;
            } else if entry.addrs.len() < MAX_ADDRS && ttl > Duration::ZERO {
                entry.addrs.push(Found {
                    addr: addr.clone(),
                    ip,
                    heard: now,
                    ttl,
                });
                new.push(addr.clone());
            }
        }
        if entry.addrs.is_empty() {
            self.peers.remove(&peer);
        } else {
            self.per_ip.entry(ip).or_default().insert(peer);
        }
        Ok(new)
    }

    /// A connection to `peer` was established: its addresses are kept for their full TTL
    /// (up to [`MAX_TTL`]).
    pub fn prove(&mut self, peer: &PeerId) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.proven = true;
        }
    }

    /// Removes and returns the addresses whose time is up.
    pub fn expire(&mut self, now: Instant) -> Vec<(PeerId, Multiaddr)> {
        let mut gone = Vec::new();
        let mut emptied = Vec::new();
        for (peer, entry) in &mut self.peers {
            let mut kept = Vec::with_capacity(entry.addrs.len());
            for found in std::mem::take(&mut entry.addrs) {
                if entry.expires(&found) <= now {
                    gone.push((*peer, found.addr, found.ip));
                } else {
                    kept.push(found);
                }
            }
            entry.addrs = kept;
            if entry.addrs.is_empty() {
                emptied.push(*peer);
            }
        }
        for peer in emptied {
            self.peers.remove(&peer);
        }
        // A peer counts against an IP while it holds an address from it.
        for (peer, _, ip) in &gone {
            let still = self
                .peers
                .get(peer)
                .is_some_and(|e| e.addrs.iter().any(|f| f.ip == *ip));
            if !still {
                if let Some(peers) = self.per_ip.get_mut(ip) {
                    peers.remove(peer);
                    if peers.is_empty() {
                        self.per_ip.remove(ip);
                    }
                }
            }
        }
        gone.into_iter()
            .map(|(peer, addr, _)| (peer, addr))
            .collect()
    }

    /// When [`Table::expire`] next has something, if ever.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|entry| entry.addrs.iter().map(|f| entry.expires(f)))
            .min()
    }

    /// How many peers the table holds.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 7);

    fn addr(ip: Ipv4Addr, port: u16) -> Multiaddr {
        format!("/ip4/{ip}/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn a_new_address_is_reported_once_and_refreshed_after() {
        let mut table = Table::default();
        let t0 = Instant::now();
        let peer = PeerId::random();
        let a = addr(IP, 4747);
        let ttl = Duration::from_secs(60);
        assert_eq!(
            table.heard(t0, IP, peer, std::slice::from_ref(&a), ttl),
            Ok(vec![a.clone()])
        );
        assert_eq!(
            table.heard(t0 + ttl / 2, IP, peer, std::slice::from_ref(&a), ttl),
            Ok(vec![])
        );
        // Refreshed at t0 + 30 s: still there at t0 + 60 s, gone at t0 + 90 s.
        assert!(table.expire(t0 + ttl).is_empty());
        assert_eq!(table.expire(t0 + ttl + ttl / 2), vec![(peer, a)]);
        assert!(table.is_empty());
        assert_eq!(table.next_expiry(), None);
    }

    #[test]
    fn a_long_ttl_is_clamped_and_shorter_still_for_a_peer_never_connected() {
        let mut table = Table::default();
        let t0 = Instant::now();
        let (stranger, friend) = (PeerId::random(), PeerId::random());
        let hour = Duration::from_secs(3600);
        table.heard(t0, IP, stranger, &[addr(IP, 1)], hour).unwrap();
        table.heard(t0, IP, friend, &[addr(IP, 2)], hour).unwrap();
        table.prove(&friend);
        assert_eq!(table.next_expiry(), Some(t0 + UNPROVEN_TTL));
        assert_eq!(
            table.expire(t0 + UNPROVEN_TTL),
            vec![(stranger, addr(IP, 1))]
        );
        assert_eq!(table.next_expiry(), Some(t0 + MAX_TTL));
        assert_eq!(table.expire(t0 + MAX_TTL), vec![(friend, addr(IP, 2))]);
    }

    #[test]
    fn a_ttl_of_zero_says_goodbye() {
        let mut table = Table::default();
        let t0 = Instant::now();
        let peer = PeerId::random();
        table
            .heard(t0, IP, peer, &[addr(IP, 1)], Duration::from_secs(60))
            .unwrap();
        // Unknown addresses with TTL 0 are not added.
        assert_eq!(
            table.heard(t0, IP, peer, &[addr(IP, 2)], Duration::ZERO),
            Ok(vec![])
        );
        table
            .heard(t0, IP, peer, &[addr(IP, 1)], Duration::ZERO)
            .unwrap();
        assert_eq!(table.expire(t0), vec![(peer, addr(IP, 1))]);
        assert!(table.is_empty());
    }

    #[test]
    fn one_ip_announces_a_few_peers_and_the_table_a_bounded_number() {
        let mut table = Table::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        let peers: Vec<PeerId> = (0..MAX_PEERS_PER_IP + 5)
            .map(|_| PeerId::random())
            .collect();
        let mut refused = 0;
        for (i, peer) in peers.iter().enumerate() {
            match table.heard(t0, IP, *peer, &[addr(IP, 1000 + i as u16)], ttl) {
                Ok(_) => {}
                Err(Refused::IpFull) => refused += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(table.len(), MAX_PEERS_PER_IP);
        assert_eq!(refused, 5);
        // The ones it holds are still refreshed.
        assert_eq!(
            table.heard(t0, IP, peers[0], &[addr(IP, 1000)], ttl),
            Ok(vec![])
        );
        // Once they expire, the IP may announce others.
        table.expire(t0 + ttl);
        assert!(table
            .heard(t0 + ttl, IP, peers[MAX_PEERS_PER_IP], &[addr(IP, 9)], ttl)
            .is_ok());

        // Many IPs: the table stops at MAX_PEERS.
        let mut table = Table::default();
        let mut full = 0;
        for i in 0..MAX_PEERS + 10 {
            let ip = Ipv4Addr::from(0x0a00_0000 + i as u32);
            if table.heard(t0, ip, PeerId::random(), &[addr(ip, 1)], ttl) == Err(Refused::Full) {
                full += 1;
            }
        }
        assert_eq!(table.len(), MAX_PEERS);
        assert_eq!(full, 10);
    }

    #[test]
    fn a_peer_keeps_a_bounded_number_of_addresses() {
        let mut table = Table::default();
        let t0 = Instant::now();
        let peer = PeerId::random();
        let addrs: Vec<Multiaddr> = (0..20).map(|i| addr(IP, 2000 + i)).collect();
        let new = table
            .heard(t0, IP, peer, &addrs, Duration::from_secs(60))
            .unwrap();
        assert_eq!(new.len(), MAX_ADDRS);
    }
}
