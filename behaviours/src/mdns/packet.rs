//! The wire format: the DNS messages of [libp2p's mDNS discovery], as rust-libp2p's
//! `libp2p-mdns` and js-libp2p send them. Built by hand (a few fixed layouts), read with
//! `hickory-proto` (names may be compressed), and bounded: at most [`MAX_PEERS_PER_PACKET`]
//! peers and [`MAX_ADDRS_PER_PEER`] addresses each are taken from one datagram.
//!
//! [libp2p's mDNS discovery]: https://github.com/libp2p/specs/blob/master/discovery/mdns.md

use hickory_proto::{
    op::{Message, MessageType},
    rr::{Name, RData, RecordType},
};
use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use rand::{distr::Alphanumeric, RngExt};

/// The service every libp2p node answers for.
pub const SERVICE_NAME: &str = "_p2p._udp.local";

/// The DNS-SD meta query ("which services are here?").
const META_QUERY: &str = "_services._dns-sd._udp.local";

/// The largest datagram read or sent (RFC 6762 allows 9,000-byte packets).
pub const MAX_PACKET: usize = 9000;

/// Most peers taken from one response.
pub const MAX_PEERS_PER_PACKET: usize = 16;

/// Most addresses taken per peer from one response.
pub const MAX_ADDRS_PER_PEER: usize = 8;

/// Most TXT records in one response we send (each at most ~300 bytes, under [`MAX_PACKET`]).
const MAX_RECORDS_PER_PACKET: usize = 28;

/// A datagram, read.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet {
    /// Someone asks for libp2p peers: answer with ours.
    Query,
    /// Someone asks which services are here: answer that libp2p is.
    ServiceQuery,
    /// Peers announce themselves.
    Response(Vec<Announcement>),
}

/// One peer of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The peer.
    pub peer: PeerId,
    /// Its addresses, without the `/p2p/<peer>` suffix.
    pub addrs: Vec<Multiaddr>,
    /// How long the sender wants them remembered, in seconds (0: forget them now).
    pub ttl: u32,
}

/// Reads a datagram; `None` for anything that is not one of libp2p's mDNS messages.
pub fn decode(datagram: &[u8]) -> Option<Packet> {
    if !plausible_counts(datagram) {
        return None;
    }
    let message = Message::from_vec(datagram).ok()?;
    let service = service_name();
    if !message.queries.is_empty() {
        if message.metadata.message_type != MessageType::Query {
            return None;
        }
        let asks = |name: &Name| {
            message.queries.iter().any(|q| {
                q.name() == name && matches!(q.query_type(), RecordType::PTR | RecordType::ANY)
            })
        };
        if asks(&service) {
            return Some(Packet::Query);
        }
        let meta = fqdn(META_QUERY);
        return asks(&meta).then_some(Packet::ServiceQuery);
    }
    let mut peers: Vec<Announcement> = Vec::new();
    for answer in &message.answers {
        if peers.len() == MAX_PEERS_PER_PACKET {
            break;
        }
        let RData::PTR(instance) = &answer.data else {
            continue;
        };
        if answer.name != service {
            continue;
        }
        // js-libp2p puts the TXT records among the answers, rust-libp2p among the additionals.
        let texts = message
            .answers
            .iter()
            .chain(&message.additionals)
            .filter(|r| r.name == instance.0)
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(txt),
                _ => None,
            })
            .flat_map(|txt| txt.txt_data.iter());
        let mut peer = None;
        let mut addrs = Vec::new();
        for text in texts {
            if addrs.len() == MAX_ADDRS_PER_PEER {
                break;
            }
            let Some((id, addr)) = dnsaddr(text) else {
                continue;
            };
            // Every address of one instance names the same peer.
            if *peer.get_or_insert(id) != id {
                continue;
            }
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if let Some(peer) = peer {
            peers.push(Announcement {
                peer,
                addrs,
                ttl: answer.ttl,
            });
        }
    }
    Some(Packet::Response(peers))
}

/// Whether the header's counts fit in the datagram (a question takes at least 5 bytes, a
/// record 11). `hickory-proto` reserves room for every question the header claims before it
/// reads one: 155 bytes claiming 28,784 questions made it allocate 2.5 MB (found by the
/// `mdns_packet` fuzz target).
fn plausible_counts(datagram: &[u8]) -> bool {
    let Some(header) = datagram.get(..12) else {
        return false;
    };
    let count = |at: usize| usize::from(u16::from_be_bytes([header[at], header[at + 1]]));
    let needed = 5 * count(4) + 11 * (count(6) + count(8) + count(10));
    needed <= datagram.len() - 12
}

/// One `dnsaddr=<multiaddr>/p2p/<peer>` string: the peer and the address without its suffix.
fn dnsaddr(text: &[u8]) -> Option<(PeerId, Multiaddr)> {
    // rust-libp2p quotes a string that holds a space.
    let text = match text {
        [b'"', inner @ .., b'"'] => inner,
        text => text,
    };
    let addr = std::str::from_utf8(text.strip_prefix(b"dnsaddr=")?).ok()?;
    let mut addr: Multiaddr = addr.parse().ok()?;
    match addr.pop()? {
        Protocol::P2p(peer) => Some((peer, addr)),
        _ => None,
    }
}

fn service_name() -> Name {
    fqdn(SERVICE_NAME)
}

/// One of our names, fully qualified (as every name read from a datagram is).
fn fqdn(name: &str) -> Name {
    let mut name = Name::from_ascii(name).expect("bug: a valid name");
    name.set_fqdn(true);
    name
}

/// A query for libp2p peers (a random id: the answers do not depend on it).
pub fn query() -> Vec<u8> {
    let mut out = Vec::with_capacity(33);
    header(&mut out, rand::random(), 0x0000, 1, 0, 0);
    qname(&mut out, SERVICE_NAME);
    u16_be(&mut out, 0x000c); // PTR
    u16_be(&mut out, 0x0001); // IN
    out
}

/// The answer to a query: `peer` at `addrs`, to be remembered for `ttl` seconds. One datagram
/// per 28 addresses (and one, empty, when there are none).
pub fn response(peer: PeerId, addrs: &[Multiaddr], ttl: u32) -> Vec<Vec<u8>> {
    // A fresh instance name per answer, as rust-libp2p does: 32 to 63 random characters.
    let length = 32 + rand::rng().random_range(0..32);
    let instance: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(length)
        .map(char::from)
        .collect();
    let records: Vec<Vec<u8>> = addrs
        .iter()
        .filter_map(|addr| {
            let text = format!("dnsaddr={addr}/p2p/{peer}");
            // A character-string holds at most 255 bytes; a multiaddr is ASCII.
            (text.len() <= 255 && text.is_ascii()).then(|| txt_record(&instance, ttl, &text))
        })
        .collect();
    let mut packets: Vec<Vec<u8>> = records
        .chunks(MAX_RECORDS_PER_PACKET)
        .map(|chunk| answer_packet(&instance, ttl, chunk))
        .collect();
    if packets.is_empty() {
        packets.push(answer_packet(&instance, ttl, &[]));
    }
    packets
}

/// The answer to the DNS-SD meta query: libp2p's service is here.
pub fn service_response(ttl: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(69);
    header(&mut out, 0, 0x8400, 0, 1, 0);
    qname(&mut out, META_QUERY);
    u16_be(&mut out, 0x000c); // PTR
    u16_be(&mut out, 0x8001); // IN, cache flush
    u32_be(&mut out, ttl);
    let mut target = Vec::new();
    qname(&mut target, SERVICE_NAME);
    u16_be(&mut out, target.len() as u16);
    out.extend_from_slice(&target);
    out
}

fn answer_packet(instance: &str, ttl: u32, records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + records.iter().map(Vec::len).sum::<usize>());
    header(&mut out, 0, 0x8400, 0, 1, records.len() as u16);
    qname(&mut out, SERVICE_NAME);
    u16_be(&mut out, 0x000c); // PTR
    u16_be(&mut out, 0x0001); // IN
    u32_be(&mut out, ttl);
    let mut target = Vec::new();
    qname(&mut target, instance);
    u16_be(&mut out, target.len() as u16);
    out.extend_from_slice(&target);
    for record in records {
        out.extend_from_slice(record);
    }
    out
}

fn txt_record(instance: &str, ttl: u32, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(instance.len() + text.len() + 16);
    qname(&mut out, instance);
    u16_be(&mut out, 0x0010); // TXT
    u16_be(&mut out, 0x8001); // IN, cache flush
    u32_be(&mut out, ttl);
    u16_be(&mut out, text.len() as u16 + 1);
    out.push(text.len() as u8);
    out.extend_from_slice(text.as_bytes());
    out
}

fn header(out: &mut Vec<u8>, id: u16, flags: u16, questions: u16, answers: u16, extra: u16) {
    for field in [id, flags, questions, answers, 0, extra] {
        u16_be(out, field);
    }
}

/// A name as DNS labels; `name` is one of ours: ASCII labels of 1 to 63 bytes.
fn qname(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.') {
        debug_assert!((1..64).contains(&label.len()), "bad label in {name}");
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn u16_be(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn u32_be(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer from iwant at 48336cb (rust-libp2p's `libp2p-mdns` 0.49), caught in a
    /// namespace lab: peer `12D3KooWEFXAkm…` at `/ip4/10.9.0.1/tcp/4747`, TTL 360 s.
    const LIBP2P_MDNS_ANSWER: &str = "123484000000000100000001045f703270045f756470056c6f63616c00000c0001000001680037357347435437796231726c42566f364a3764443132395236625879564c53797269585063575258394e46316c6d747a64784356756d5400357347435437796231726c42566f364a3764443132395236625879564c53797269585063575258394e46316c6d747a64784356756d54000010800100000168005857646e73616464723d2f6970342f31302e392e302e312f7463702f343734372f7032702f313244334b6f6f57454658416b6d354237784145557843486d3369357a7a5237566d43414447554c337351473551525659746f72";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn reads_an_answer_of_rust_libp2p() {
        let Some(Packet::Response(peers)) = decode(&hex(LIBP2P_MDNS_ANSWER)) else {
            panic!("not read as a response");
        };
        assert_eq!(
            peers,
            vec![Announcement {
                peer: "12D3KooWEFXAkm5B7xAEUxCHm3i5zzR7VmCADGUL3sQG5QRVYtor"
                    .parse()
                    .unwrap(),
                addrs: vec![addr("/ip4/10.9.0.1/tcp/4747")],
                ttl: 360,
            }]
        );
    }

    #[test]
    fn what_it_sends_it_reads() {
        let peer = PeerId::random();
        let addrs = vec![
            addr("/ip4/10.0.0.7/tcp/4747"),
            addr("/ip4/10.0.0.7/tcp/4748"),
        ];
        let packets = response(peer, &addrs, 360);
        assert_eq!(packets.len(), 1);
        assert_eq!(
            decode(&packets[0]),
            Some(Packet::Response(vec![Announcement {
                peer,
                addrs,
                ttl: 360
            }]))
        );
        assert_eq!(decode(&query()), Some(Packet::Query));
        assert_eq!(
            decode(&service_response(360)),
            Some(Packet::Response(vec![]))
        );
    }

    #[test]
    fn many_addresses_take_several_datagrams_each_within_the_size_limit() {
        let peer = PeerId::random();
        let addrs: Vec<Multiaddr> = (0..100)
            .map(|i| addr(&format!("/ip4/10.0.0.7/tcp/{}", 4000 + i)))
            .collect();
        let packets = response(peer, &addrs, 60);
        assert_eq!(packets.len(), 4);
        let mut seen = 0;
        for packet in &packets {
            assert!(packet.len() <= MAX_PACKET, "{} bytes", packet.len());
            let Some(Packet::Response(peers)) = decode(packet) else {
                panic!("not a response");
            };
            // Each datagram is read up to the per-peer bound.
            assert_eq!(peers[0].addrs.len(), MAX_ADDRS_PER_PEER);
            seen += 1;
        }
        assert_eq!(seen, 4);
        // No addresses: one empty answer all the same.
        let empty = response(peer, &[], 60);
        assert_eq!(empty.len(), 1);
        assert_eq!(decode(&empty[0]), Some(Packet::Response(vec![])));
    }

    #[test]
    fn a_response_naming_many_peers_is_read_up_to_the_bound() {
        // One datagram announcing 40 peers, each under its own instance name.
        let peers: Vec<PeerId> = (0..40).map(|_| PeerId::random()).collect();
        let mut out = Vec::new();
        header(&mut out, 0, 0x8400, 0, 40, 40);
        for (i, _) in peers.iter().enumerate() {
            qname(&mut out, SERVICE_NAME);
            u16_be(&mut out, 0x000c);
            u16_be(&mut out, 0x0001);
            u32_be(&mut out, 3600);
            let mut target = Vec::new();
            qname(&mut target, &format!("peer{i}"));
            u16_be(&mut out, target.len() as u16);
            out.extend_from_slice(&target);
        }
        for (i, peer) in peers.iter().enumerate() {
            out.extend(txt_record(
                &format!("peer{i}"),
                3600,
                &format!("dnsaddr=/ip4/10.0.0.9/tcp/{}/p2p/{peer}", 1000 + i),
            ));
        }
        let Some(Packet::Response(read)) = decode(&out) else {
            panic!("not a response");
        };
        assert_eq!(read.len(), MAX_PEERS_PER_PACKET);
        assert_eq!(read[0].peer, peers[0]);
        assert_eq!(read[0].ttl, 3600);
    }

    #[test]
    fn an_instance_naming_two_peers_keeps_the_first() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut out = Vec::new();
        header(&mut out, 0, 0x8400, 0, 1, 2);
        qname(&mut out, SERVICE_NAME);
        u16_be(&mut out, 0x000c);
        u16_be(&mut out, 0x0001);
        u32_be(&mut out, 60);
        let mut target = Vec::new();
        qname(&mut target, "x");
        u16_be(&mut out, target.len() as u16);
        out.extend_from_slice(&target);
        out.extend(txt_record(
            "x",
            60,
            &format!("dnsaddr=/ip4/10.0.0.1/tcp/1/p2p/{a}"),
        ));
        out.extend(txt_record(
            "x",
            60,
            &format!("dnsaddr=/ip4/10.0.0.2/tcp/2/p2p/{b}"),
        ));
        let Some(Packet::Response(read)) = decode(&out) else {
            panic!("not a response");
        };
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].peer, a);
        assert_eq!(read[0].addrs, vec![addr("/ip4/10.0.0.1/tcp/1")]);
    }

    #[test]
    fn garbage_is_not_a_packet() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0xff; 12]), None);
        assert_eq!(decode(&hex(LIBP2P_MDNS_ANSWER)[..40]), None);
        // A query for another service.
        let mut other = Vec::new();
        header(&mut other, 0, 0, 1, 0, 0);
        qname(&mut other, "_http._tcp.local");
        u16_be(&mut other, 0x000c);
        u16_be(&mut other, 0x0001);
        assert_eq!(decode(&other), None);
        // A header claiming more questions or records than the datagram can hold.
        let mut claims = Vec::new();
        header(&mut claims, 0, 0, 0x7070, 0x7070, 0x7070);
        claims.extend_from_slice(&[0x70; 143]);
        assert!(!plausible_counts(&claims));
        assert_eq!(decode(&claims), None);
        assert!(plausible_counts(&query()));
        // Strings that are not addresses of a peer.
        assert_eq!(dnsaddr(b"dnsaddr=/ip4/10.0.0.1/tcp/1"), None);
        assert_eq!(dnsaddr(b"nonsense"), None);
        assert_eq!(dnsaddr(b"dnsaddr=\xff"), None);
    }
}
