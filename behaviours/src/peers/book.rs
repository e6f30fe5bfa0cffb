//! The address book: the peers this node knows of (found by mDNS, announced by other nodes),
//! where they listen, and when to dial each. A plain struct: no I/O, and every call that needs
//! the time takes `now`, so tests drive the clock.
//!
//! # Policy
//!
//! - **One dialer per pair.** When two nodes find each other at the same moment (mDNS answers
//!   reach everyone at once), both dialing makes two connections, one of which is torn down,
//!   often in the middle of its handshake. So the node with the smaller peer id dials at once,
//!   and the other waits [`DEFER`] (plus jitter) for that dial before it dials itself: a peer
//!   that cannot reach us, or did not hear of us, is still dialed.
//! - **Backoff.** A peer whose dial failed or whose connection closed is dialed again after
//!   [`FIRST_BACKOFF`], then twice as long each time up to [`MAX_BACKOFF`] (with ±25 %
//!   jitter, so a room of nodes that lost the same peer does not redial it in step). A
//!   connection resets it.
//! - **Forgetting.** A peer is forgotten when the last source that named it expires: mDNS
//!   says so, or no node announced it for [`ANNOUNCED_TTL`] (only while it is not connected).
//!   The book holds at most [`MAX_PEERS`] peers found by mDNS and [`MAX_PEERS`] known only
//!   from announcements, so a peer announcing made-up ones cannot crowd out those mDNS finds,
//!   and [`MAX_ADDRS`] addresses each.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId};
use rand::{rngs::SmallRng, RngExt, SeedableRng};

/// How long the node with the larger peer id waits for the other to dial first.
pub const DEFER: Duration = Duration::from_secs(5);

/// The first wait before dialing a peer again after a failed dial or a closed connection.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between two dials of a peer that stays unreachable.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long an announced peer is remembered without a new announcement, while not connected.
pub const ANNOUNCED_TTL: Duration = Duration::from_secs(120);

/// Most peers in the book found by mDNS, and most known only from announcements; beyond
/// either, new peers of that source are not added.
pub const MAX_PEERS: usize = 1024;

/// Most addresses kept per peer.
pub const MAX_ADDRS: usize = 8;

/// What [`Book::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A peer the book did not hold.
    New,
    /// A peer it held already (its addresses and source are updated).
    Known,
    /// Not added: this node itself, or no address.
    Ignored,
    /// Not added: the book holds [`MAX_PEERS`] peers of that source already.
    Full,
}

impl Added {
    /// Whether the book holds the peer now.
    pub fn held(self) -> bool {
        matches!(self, Added::New | Added::Known)
    }
}

/// Where the book heard of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// mDNS on the local network.
    Mdns,
    /// Another node announced it (peer exchange).
    Announced,
}

#[derive(Debug)]
struct Entry {
    addrs: Vec<Multiaddr>,
    /// mDNS lists it now.
    mdns: bool,
    /// When a node last announced it.
    announced: Option<Instant>,
    connected: bool,
    /// A dial is under way.
    dialing: bool,
    /// When it may be dialed next.
    next_dial: Instant,
    /// The wait after the next failure.
    backoff: Duration,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct Book {
    local: PeerId,
    peers: BTreeMap<PeerId, Entry>,
    rng: SmallRng,
}

impl Book {
    /// The book of node `local`; `seed` drives the jitter.
    pub fn new(local: PeerId, seed: u64) -> Self {
        Self {
            local,
            peers: BTreeMap::new(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// `source` names `peer` at `addrs`.
    pub fn add(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        source: Source,
        now: Instant,
    ) -> Added {
        if peer == self.local || addrs.is_empty() {
            return Added::Ignored;
        }
        let added = if self.peers.contains_key(&peer) {
            Added::Known
        } else {
            let of_source = self
                .peers
                .values()
                .filter(|e| e.mdns == (source == Source::Mdns))
                .count();
            if of_source >= MAX_PEERS {
                return Added::Full;
            }
            let first = if self.local < peer {
                now
            } else {
                now + DEFER + self.jitter(DEFER / 2)
            };
            self.peers.insert(
                peer,
                Entry {
                    addrs: Vec::new(),
                    mdns: false,
                    announced: None,
                    connected: false,
                    dialing: false,
                    next_dial: first,
                    backoff: FIRST_BACKOFF,
                },
            );
            Added::New
        };
        let entry = self.peers.get_mut(&peer).expect("bug: inserted above");
        for addr in addrs {
            // One form per address: mDNS names it with `/p2p/<peer>`, identify without, and
            // two forms of one address would be dialed at once, one dial torn down mid-way.
            let addr = without_peer(addr);
            if !entry.addrs.contains(&addr) && entry.addrs.len() < MAX_ADDRS {
                entry.addrs.push(addr);
            }
        }
        match source {
            Source::Mdns => entry.mdns = true,
            Source::Announced => entry.announced = Some(now),
        }
        added
    }

    /// mDNS no longer lists `addr` of `peer`.
    pub fn expire(&mut self, peer: &PeerId, addr: &Multiaddr) {
        let Some(entry) = self.peers.get_mut(peer) else {
            return;
        };
        entry.addrs.retain(|a| a != addr);
        if entry.addrs.is_empty() {
            entry.mdns = false;
            if entry.announced.is_none() && !entry.connected {
                self.peers.remove(peer);
            }
        }
    }

    /// The peers to dial now (at most `max`; the others stay due), each with its addresses;
    /// each is marked as being dialed until [`Book::connected`] or [`Book::dial_failed`].
    pub fn due(&mut self, now: Instant, max: usize) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let expired: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, e)| {
                !e.connected
                    && !e.mdns
                    && e.announced
                        .is_none_or(|at| now.saturating_duration_since(at) > ANNOUNCED_TTL)
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            self.peers.remove(&peer);
        }
        let mut due = Vec::new();
        for (peer, entry) in &mut self.peers {
            if due.len() == max {
                break;
            }
            if !entry.connected && !entry.dialing && entry.next_dial <= now {
                entry.dialing = true;
                due.push((*peer, entry.addrs.clone()));
            }
        }
        due
    }

    /// When [`Book::due`] next has something, if ever.
    pub fn next_due(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter(|e| !e.connected && !e.dialing)
            .map(|e| e.next_dial)
            .min()
    }

    /// A connection to `peer` is up (dialed by either side).
    pub fn connected(&mut self, peer: &PeerId) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.connected = true;
            entry.dialing = false;
            entry.backoff = FIRST_BACKOFF;
        }
    }

    /// The last connection to `peer` closed: it is dialed again after its backoff.
    pub fn disconnected(&mut self, peer: &PeerId, now: Instant) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.connected = false;
            entry.dialing = false;
        }
        self.back_off(peer, now);
    }

    /// A dial of `peer` failed (or was not made): it is dialed again after its backoff,
    /// unless it is connected anyway (the other side dialed).
    pub fn dial_failed(&mut self, peer: &PeerId, now: Instant) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.dialing = false;
            if entry.connected {
                return;
            }
        }
        self.back_off(peer, now);
    }

    /// `peer`'s addresses (none if the book does not hold it).
    pub fn addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.peers
            .get(peer)
            .map(|e| e.addrs.clone())
            .unwrap_or_default()
    }

    /// Whether the book holds `peer`.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// How many peers the book holds.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn back_off(&mut self, peer: &PeerId, now: Instant) {
        let Some(backoff) = self.peers.get(peer).map(|e| e.backoff) else {
            return;
        };
        let wait = backoff.mul_f64(0.75) + self.jitter(backoff / 2);
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.next_dial = now + wait;
            entry.backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// A random duration in `[0, max)`.
    fn jitter(&mut self, max: Duration) -> Duration {
        let micros = max.as_micros() as u64;
        if micros == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.rng.random_range(0..micros))
    }
}

/// `addr` without a trailing `/p2p/<peer>`.
fn without_peer(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if matches!(
        addr.iter().last(),
        Some(libp2p::multiaddr::Protocol::P2p(_))
    ) {
        addr.pop();
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<PeerId> {
        let mut ids: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        ids.sort();
        ids
    }

    fn addr(i: u8) -> Multiaddr {
        format!("/ip4/10.0.0.{i}/tcp/4747").parse().unwrap()
    }

    fn peers(due: &[(PeerId, Vec<Multiaddr>)]) -> Vec<PeerId> {
        due.iter().map(|(p, _)| *p).collect()
    }

    #[test]
    fn of_two_nodes_that_find_each_other_only_the_smaller_dials_at_once() {
        let [small, large]: [PeerId; 2] = ids(2).try_into().unwrap();
        let t0 = Instant::now();
        let mut a = Book::new(small, 1);
        let mut b = Book::new(large, 2);
        assert!(a.add(large, &[addr(2)], Source::Mdns, t0).held());
        assert!(b.add(small, &[addr(1)], Source::Mdns, t0).held());
        assert_eq!(peers(&a.due(t0, usize::MAX)), [large]);
        assert!(
            b.due(t0, usize::MAX).is_empty(),
            "the larger waits for the smaller's dial"
        );
        // The smaller's dial arrives: the larger never dials.
        a.connected(&large);
        b.connected(&small);
        assert!(b.due(t0 + DEFER * 2, usize::MAX).is_empty());
    }

    #[test]
    fn the_larger_dials_after_the_deferral_when_no_dial_came() {
        let [small, large]: [PeerId; 2] = ids(2).try_into().unwrap();
        let t0 = Instant::now();
        let mut b = Book::new(large, 2);
        b.add(small, &[addr(1)], Source::Announced, t0);
        assert!(b
            .due(t0 + DEFER - Duration::from_millis(1), usize::MAX)
            .is_empty());
        let at = b.next_due().unwrap();
        assert!(
            at >= t0 + DEFER && at < t0 + DEFER + DEFER / 2,
            "{:?}",
            at - t0
        );
        assert_eq!(b.due(at, usize::MAX), [(small, vec![addr(1)])]);
        assert!(b.due(at, usize::MAX).is_empty(), "one dial at a time");
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap_and_a_connection_resets_it() {
        let [local, peer]: [PeerId; 2] = ids(2).try_into().unwrap();
        let mut t = Instant::now();
        let mut book = Book::new(local, 3);
        book.add(peer, &[addr(2)], Source::Mdns, t);
        let mut waits = Vec::new();
        for _ in 0..10 {
            assert_eq!(peers(&book.due(t, usize::MAX)), [peer]);
            book.dial_failed(&peer, t);
            let next = book.next_due().unwrap();
            waits.push(next - t);
            t = next;
        }
        for (k, w) in waits.iter().enumerate() {
            let nominal = (FIRST_BACKOFF * 2u32.pow(k as u32)).min(MAX_BACKOFF);
            assert!(
                *w >= nominal.mul_f64(0.75) && *w < nominal.mul_f64(1.25),
                "wait {k}: {w:?} for {nominal:?}"
            );
        }
        book.due(t, usize::MAX);
        book.connected(&peer);
        assert!(
            book.due(t + MAX_BACKOFF * 2, usize::MAX).is_empty(),
            "connected"
        );
        book.disconnected(&peer, t);
        let next = book.next_due().unwrap() - t;
        assert!(next < FIRST_BACKOFF.mul_f64(1.25), "reset: {next:?}");
    }

    #[test]
    fn at_most_max_peers_are_handed_out_and_the_rest_stay_due() {
        let all = ids(11);
        let (local, others) = (all[0], &all[1..]);
        let t0 = Instant::now();
        let mut book = Book::new(local, 5);
        for (k, p) in others.iter().enumerate() {
            book.add(*p, &[addr(k as u8 + 2)], Source::Mdns, t0);
        }
        // Past every peer's deferral: all ten are due.
        let t = t0 + DEFER * 2;
        let first = book.due(t, 4);
        assert_eq!(first.len(), 4);
        assert!(
            book.next_due().is_some_and(|d| d <= t),
            "the others are still due"
        );
        let second = book.due(t, 4);
        let third = book.due(t, 4);
        assert_eq!((second.len(), third.len()), (4, 2));
        let mut handed: Vec<PeerId> = [first, second, third]
            .concat()
            .iter()
            .map(|(p, _)| *p)
            .collect();
        handed.sort();
        handed.dedup();
        assert_eq!(handed.len(), 10, "each once");
    }

    #[test]
    fn an_address_named_with_and_without_its_peer_id_is_kept_once() {
        let [local, peer]: [PeerId; 2] = ids(2).try_into().unwrap();
        let t0 = Instant::now();
        let mut book = Book::new(local, 8);
        let with_id = addr(2).with(libp2p::multiaddr::Protocol::P2p(peer));
        book.add(peer, &[with_id], Source::Mdns, t0);
        book.add(peer, &[addr(2)], Source::Announced, t0);
        assert_eq!(book.due(t0, usize::MAX), [(peer, vec![addr(2)])]);
    }

    #[test]
    fn a_failed_dial_of_a_peer_that_dialed_us_meanwhile_changes_nothing() {
        let [local, peer]: [PeerId; 2] = ids(2).try_into().unwrap();
        let t0 = Instant::now();
        let mut book = Book::new(local, 4);
        book.add(peer, &[addr(2)], Source::Mdns, t0);
        book.due(t0, usize::MAX);
        book.connected(&peer);
        book.dial_failed(&peer, t0);
        assert_eq!(book.next_due(), None);
    }

    #[test]
    fn peers_are_forgotten_when_their_last_source_expires_but_not_while_connected() {
        let [local, a, b, c]: [PeerId; 4] = ids(4).try_into().unwrap();
        let t0 = Instant::now();
        let mut book = Book::new(local, 5);
        book.add(a, &[addr(1)], Source::Mdns, t0);
        book.add(b, &[addr(2)], Source::Announced, t0);
        book.add(c, &[addr(3)], Source::Announced, t0);
        book.due(t0 + DEFER * 2, usize::MAX);
        book.connected(&c);
        book.expire(&a, &addr(1));
        assert!(!book.contains(&a), "mDNS was its only source");
        let later = t0 + ANNOUNCED_TTL + Duration::from_secs(1);
        book.due(later, usize::MAX);
        assert!(!book.contains(&b), "no announcement for too long");
        assert!(book.contains(&c), "connected");
    }

    #[test]
    fn the_book_is_bounded_and_refuses_itself_and_peers_without_addresses() {
        let local = PeerId::random();
        let t0 = Instant::now();
        let mut book = Book::new(local, 6);
        assert_eq!(
            book.add(local, &[addr(1)], Source::Mdns, t0),
            Added::Ignored
        );
        assert_eq!(
            book.add(PeerId::random(), &[], Source::Mdns, t0),
            Added::Ignored
        );
        for _ in 0..MAX_PEERS {
            let p = PeerId::random();
            assert_eq!(book.add(p, &[addr(1)], Source::Announced, t0), Added::New);
            assert_eq!(book.add(p, &[addr(2)], Source::Announced, t0), Added::Known);
        }
        assert_eq!(
            book.add(PeerId::random(), &[addr(1)], Source::Announced, t0),
            Added::Full
        );
        assert_eq!(book.len(), MAX_PEERS);
        // Announced peers cannot crowd out the ones mDNS finds, which have a bound of their own.
        for _ in 0..MAX_PEERS {
            assert_eq!(
                book.add(PeerId::random(), &[addr(3)], Source::Mdns, t0),
                Added::New
            );
        }
        assert_eq!(
            book.add(PeerId::random(), &[addr(3)], Source::Mdns, t0),
            Added::Full
        );
        assert_eq!(book.len(), 2 * MAX_PEERS);
        let p = PeerId::random();
        let many: Vec<Multiaddr> = (0..20).map(addr).collect();
        let mut small = Book::new(local, 7);
        small.add(p, &many, Source::Mdns, t0);
        let due = small.due(t0 + DEFER * 2, usize::MAX);
        assert_eq!(due[0].1.len(), MAX_ADDRS);
    }
}
