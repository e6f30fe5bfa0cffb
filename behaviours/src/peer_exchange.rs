//! Peer exchange (`/iwant/peers/1.0.0`): iwant nodes tell each other about the iwant nodes they
//! are connected to, so that meeting one node is enough to meet the whole LAN.
//!
//! mDNS alone can leave gaps: a node that hears another node's mDNS response before sending its
//! own first query never queries (libp2p-mdns stops probing once it hears anything), and on
//! networks without multicast a node only knows its `--peer` addresses. So whenever a node
//! identifies a new iwant peer `P`, it sends `P` an [`Announce`] of its other iwant peers, and
//! sends each of those an [`Announce`] of `P`. The receiver dials the peers it is not connected
//! to yet.
//!
//! Wire format: libp2p request-response with CBOR bodies. Request: `{"peers": [{"peer_id":
//! <base58 string>, "addrs": [<multiaddr string>, ...]}, ...]}`; response: `{}`. Limits: at most
//! [`MAX_PEERS`] records of at most [`MAX_ADDRS`] addresses each, and [`MAX_MESSAGE`] bytes; a
//! request beyond them is refused whole.

use std::{str::FromStr, time::Duration};

use libp2p::{
    request_response::{self, cbor},
    Multiaddr, PeerId, StreamProtocol,
};
use serde::{Deserialize, Serialize};

/// The protocol id.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/iwant/peers/1.0.0");

/// Most peer records in one announcement.
pub const MAX_PEERS: usize = 64;

/// Most addresses per peer record.
pub const MAX_ADDRS: usize = 8;

/// Largest encoded announcement or acknowledgement, in bytes.
pub const MAX_MESSAGE: u64 = 32 * 1024;

/// "Here are iwant peers you may not know yet."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// The peers.
    #[serde(deserialize_with = "crate::wire::capped::<_, _, MAX_PEERS>")]
    pub peers: Vec<PeerRecord>,
}

/// One peer and where it listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The peer id, base58 as libp2p prints it.
    pub peer_id: String,
    /// Its listen addresses, as multiaddr strings.
    #[serde(deserialize_with = "crate::wire::capped::<_, _, MAX_ADDRS>")]
    pub addrs: Vec<String>,
}

/// The empty acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {}

/// The behaviour: request-response with the CBOR codec and the limits above.
pub type Behaviour = cbor::Behaviour<Announce, Ack>;

/// The behaviour's events.
pub type Event = request_response::Event<Announce, Ack>;

/// A peer exchange behaviour with iwant's limits.
pub fn behaviour() -> Behaviour {
    crate::wire::cbor_behaviour(PROTOCOL, MAX_MESSAGE, MAX_MESSAGE, Duration::from_secs(10))
}

impl Announce {
    /// Builds an announcement, keeping at most [`MAX_PEERS`] peers and [`MAX_ADDRS`]
    /// addresses each.
    pub fn new<'a>(peers: impl IntoIterator<Item = (PeerId, &'a [Multiaddr])>) -> Self {
        Self {
            peers: peers
                .into_iter()
                .take(MAX_PEERS)
                .map(|(peer, addrs)| PeerRecord {
                    peer_id: peer.to_string(),
                    addrs: addrs
                        .iter()
                        .take(MAX_ADDRS)
                        .map(|a| a.to_string())
                        .collect(),
                })
                .collect(),
        }
    }

    /// Checks the bounds and parses every record; any violation refuses the whole message.
    pub fn parse(&self) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, String> {
        if self.peers.len() > MAX_PEERS {
            return Err(format!(
                "{} peer records, more than {MAX_PEERS}",
                self.peers.len()
            ));
        }
        self.peers
            .iter()
            .map(|record| {
                let peer = PeerId::from_str(&record.peer_id)
                    .map_err(|e| format!("bad peer id {:?}: {e}", record.peer_id))?;
                if record.addrs.len() > MAX_ADDRS {
                    return Err(format!(
                        "{} addresses for {peer}, more than {MAX_ADDRS}",
                        record.addrs.len()
                    ));
                }
                let addrs = record
                    .addrs
                    .iter()
                    .map(|a| Multiaddr::from_str(a).map_err(|e| format!("bad address {a:?}: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((peer, addrs))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_and_are_bounded() {
        let addrs: Vec<Multiaddr> = (0..20)
            .map(|i| format!("/ip4/10.0.0.{i}/tcp/4747").parse().unwrap())
            .collect();
        let peers: Vec<PeerId> = (0..100).map(|_| PeerId::random()).collect();
        let announce = Announce::new(peers.iter().map(|p| (*p, &addrs[..])));
        assert_eq!(announce.peers.len(), MAX_PEERS);
        assert!(announce.peers.iter().all(|r| r.addrs.len() == MAX_ADDRS));
        let parsed = announce.parse().unwrap();
        assert_eq!(parsed[0].0, peers[0]);
        assert_eq!(parsed[0].1, addrs[..MAX_ADDRS]);
    }

    #[test]
    fn hostile_announcements_are_refused_whole() {
        let ok = PeerRecord {
            peer_id: PeerId::random().to_string(),
            addrs: vec!["/ip4/10.0.0.1/tcp/1".into()],
        };
        let too_many = Announce {
            peers: vec![ok.clone(); MAX_PEERS + 1],
        };
        assert!(too_many.parse().is_err());
        let bad_id = Announce {
            peers: vec![
                ok.clone(),
                PeerRecord {
                    peer_id: "nope".into(),
                    addrs: vec![],
                },
            ],
        };
        assert!(bad_id.parse().is_err());
        let bad_addr = Announce {
            peers: vec![PeerRecord {
                peer_id: ok.peer_id.clone(),
                addrs: vec!["10.0.0.1:1".into()],
            }],
        };
        assert!(bad_addr.parse().is_err());
        let many_addrs = Announce {
            peers: vec![PeerRecord {
                peer_id: ok.peer_id,
                addrs: vec!["/ip4/1.1.1.1/tcp/1".into(); MAX_ADDRS + 1],
            }],
        };
        assert!(many_addrs.parse().is_err());
    }

    #[test]
    fn too_many_records_decode_capped_and_are_still_refused() {
        let record = PeerRecord {
            peer_id: PeerId::random().to_string(),
            addrs: vec!["/ip4/10.0.0.1/tcp/1".into(); MAX_ADDRS + 50],
        };
        let announce = Announce {
            peers: vec![record; MAX_PEERS + 50],
        };
        let mut buf = Vec::new();
        cbor4ii::serde::to_writer(&mut buf, &announce).unwrap();
        let back: Announce = cbor4ii::serde::from_slice(&buf).unwrap();
        assert_eq!(back.peers.len(), MAX_PEERS + 1);
        assert!(back.peers.iter().all(|r| r.addrs.len() == MAX_ADDRS + 1));
        assert!(back.parse().is_err());
    }
}
