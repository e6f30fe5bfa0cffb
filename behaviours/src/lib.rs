//! iwant's libp2p behaviours and wire protocols.
//!
//! The main type is [`NodeBehaviour`]: the one [`libp2p::swarm::NetworkBehaviour`]
//! that an iwant node's `Swarm` drives. It composes the standard libp2p protocols
//! (identify, ping, mDNS) with iwant's own:
//!
//! - [`connections`]: one live connection per peer, kept alive while the peer is an iwant node.
//! - [`peer_exchange`]: nodes tell each other about the iwant nodes they know.
//! - [`election`]: the nodes elect one leader per LAN (`/iwant/election/1`).
//! - [`index_sync`]: every node pushes its index to the leader (`/iwant/index/1.0.0`).
//! - [`search`]: searches and id lookups, answered by the leader (`/iwant/search/1.0.0`).
//! - [`content`]: piece lists and directory manifests, answered by holders
//!   (`/iwant/content/1.0.0`).
//! - [`chunk`]: the wire format of piece streams (`/iwant/chunk/1`), opened and accepted through
//!   [`libp2p_stream`] ([`NodeBehaviour::chunk`]).
//!
//! This crate knows nothing about disks, configuration files or the command line: it is the
//! network vocabulary that the `iwant` node speaks, [`id::Id`] and [`wire::Kind`] included
//! (with the `rusqlite` feature they also go in and out of SQLite). Wire formats are specified in
//! `docs/protocols.md`.

pub mod chunk;
pub mod connections;
pub mod content;
pub mod election;
pub mod id;
pub mod index_sync;
pub mod mdns;
pub mod peer_exchange;
pub mod peers;
pub mod search;
pub mod wire;

/// The generic stream behaviour that carries [`chunk`] streams; its
/// [`Control`](libp2p_stream::Control) opens and accepts them.
pub use libp2p_stream;

use std::time::Duration;

use libp2p::{
    connection_limits::{self, ConnectionLimits},
    identify,
    identity::Keypair,
    ping,
    swarm::behaviour::toggle::Toggle,
    swarm::NetworkBehaviour,
};

/// Prefix of the identify agent string of every iwant node (`iwant/<version>`).
pub const AGENT_PREFIX: &str = "iwant/";

/// The identify `protocolVersion` every iwant node announces.
pub const PROTOCOL_VERSION: &str = "/iwant/1";

/// A seed for the address book's jitter that differs from node to node: the end of the peer
/// id (its start is the same multihash prefix for every node).
fn jitter_seed(peer: &libp2p::PeerId) -> u64 {
    let bytes = peer.to_bytes();
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&bytes[bytes.len() - 8..]);
    u64::from_le_bytes(tail)
}

/// Whether an identify agent string belongs to an iwant node.
pub fn is_iwant_agent(agent: &str) -> bool {
    agent.starts_with(AGENT_PREFIX)
}

/// The longest node name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// A node name as it may be shown: without control or formatting characters (no escape
/// sequences, no right-to-left overrides), whitespace runs as one space, trimmed, at most
/// [`MAX_NAME_CHARS`] characters; `None` if nothing is left. Names are for people only: never
/// trusted for anything (two nodes may claim one name; peer ids tell them apart).
pub fn clean_name(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut space = false;
    for c in raw.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() || is_format(c) {
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
        if out.chars().count() >= MAX_NAME_CHARS {
            break;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Unicode's invisible formatting characters (bidirectional controls, zero-width ones).
fn is_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
}

/// The identify agent string of an iwant node named `name`: `iwant/<version> (<name>)`.
pub fn agent_with_name(name: &str) -> String {
    match clean_name(&name.replace(['(', ')'], "")) {
        Some(name) => format!("{AGENT_PREFIX}{} ({name})", env!("CARGO_PKG_VERSION")),
        None => format!("{AGENT_PREFIX}{}", env!("CARGO_PKG_VERSION")),
    }
}

/// The node name in an iwant agent string (`iwant/<version> (<name>)`), cleaned; `None` for
/// other agents and for iwant nodes without one.
pub fn agent_name(agent: &str) -> Option<String> {
    if !is_iwant_agent(agent) || agent.len() > 256 {
        return None;
    }
    let (_, rest) = agent.split_once(" (")?;
    clean_name(rest.strip_suffix(')')?)
}

/// Settings for [`NodeBehaviour::new`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The identify agent string. Default: `iwant/<this crate's version>`.
    pub agent_version: String,
    /// Run mDNS discovery. Default: `true`.
    pub mdns: bool,
    /// How often each connection is pinged (for the round-trip time, and to find hung peers;
    /// the kernel's TCP keepalive finds vanished ones). Default: 5 s (py-libp2p closes a ping
    /// stream that stays silent for 10 s, and a new ping stream every time would keep an idle
    /// foreign peer's connection open forever).
    pub ping_interval: Duration,
    /// How long a ping may take before it counts as failed. Default: 10 s.
    pub ping_timeout: Duration,
    /// The lifetime of this node's mDNS records on other nodes. Default: 6 min.
    pub mdns_ttl: Duration,
    /// How often mDNS asks the network again once it has settled. Default: 5 min (every
    /// query is answered by every node: on a LAN of hundreds, a short interval floods it;
    /// a new node asks at once, and the others learn of it from its connections).
    pub mdns_query_interval: Duration,
    /// The leader election's timers. Default: [`election::Config::default`].
    pub election: election::Config,
    /// Bounds on connections, node-wide (libp2p's `connection_limits`). Default: 128 inbound
    /// and 64 outbound handshakes at once, 4,096 established, 4 per peer.
    pub connection_limits: ConnectionLimits,
    /// Inbound connections one remote IP address may hold at once, handshakes included
    /// (loopback is exempt). Default: [`connections::MAX_INBOUND_PER_IP`].
    pub max_inbound_per_ip: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            agent_version: format!("{AGENT_PREFIX}{}", env!("CARGO_PKG_VERSION")),
            mdns: true,
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(10),
            mdns_ttl: Duration::from_secs(360),
            mdns_query_interval: Duration::from_secs(300),
            election: election::Config::default(),
            connection_limits: ConnectionLimits::default()
                .with_max_pending_incoming(Some(128))
                .with_max_pending_outgoing(Some(64))
                .with_max_established(Some(4_096))
                .with_max_established_per_peer(Some(4)),
            max_inbound_per_ip: connections::MAX_INBOUND_PER_IP,
        }
    }
}

impl Config {
    /// Sets the identify agent string.
    pub fn with_agent_version(mut self, agent: impl Into<String>) -> Self {
        self.agent_version = agent.into();
        self
    }

    /// Turns mDNS discovery on or off.
    pub fn with_mdns(mut self, on: bool) -> Self {
        self.mdns = on;
        self
    }
}

/// Everything an iwant node speaks, composed into one behaviour.
#[derive(NetworkBehaviour)]
pub struct NodeBehaviour {
    /// Node-wide bounds on connections (first: it refuses before anything else is set up).
    pub limits: connection_limits::Behaviour,
    /// Connection policy: dedupe and keep-alive for iwant peers.
    pub connections: connections::Behaviour,
    /// The address book: which peers to dial, and when.
    pub peers: peers::Behaviour,
    /// libp2p identify (`/ipfs/id/1.0.0`).
    pub identify: identify::Behaviour,
    /// libp2p ping (`/ipfs/ping/1.0.0`).
    pub ping: ping::Behaviour,
    /// mDNS discovery; absent when turned off.
    pub mdns: Toggle<mdns::Behaviour>,
    /// Peer exchange (`/iwant/peers/1.0.0`).
    pub peer_exchange: peer_exchange::Behaviour,
    /// Leader election (`/iwant/election/1`).
    pub election: election::Behaviour,
    /// Index sync to the leader (`/iwant/index/1.0.0`).
    pub index_sync: index_sync::Behaviour,
    /// Search at the leader (`/iwant/search/1.0.0`).
    pub search: search::Behaviour,
    /// Piece lists and manifests (`/iwant/content/1.0.0`).
    pub content: content::Behaviour,
    /// Piece streams (`/iwant/chunk/1`).
    pub chunk: libp2p_stream::Behaviour,
}

impl NodeBehaviour {
    /// Builds the behaviour for the node whose identity is `keypair`.
    pub fn new(keypair: &Keypair, config: Config) -> std::io::Result<Self> {
        let local_peer_id = keypair.public().to_peer_id();
        let mdns = if config.mdns {
            let mdns_config = mdns::Config {
                ttl: config.mdns_ttl,
                query_interval: config.mdns_query_interval,
            };
            Some(mdns::Behaviour::new(mdns_config, local_peer_id)?)
        } else {
            None
        };
        Ok(Self {
            limits: connection_limits::Behaviour::new(config.connection_limits),
            connections: connections::Behaviour::new(local_peer_id)
                .with_max_inbound_per_ip(config.max_inbound_per_ip),
            peers: peers::Behaviour::new(local_peer_id, jitter_seed(&local_peer_id)),
            identify: identify::Behaviour::new(
                identify::Config::new(PROTOCOL_VERSION.to_string(), keypair.public())
                    .with_agent_version(config.agent_version),
            ),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(config.ping_interval)
                    .with_timeout(config.ping_timeout),
            ),
            mdns: mdns.into(),
            peer_exchange: peer_exchange::behaviour(),
            election: election::Behaviour::new(local_peer_id, config.election),
            index_sync: index_sync::behaviour(),
            search: search::behaviour(),
            content: content::behaviour(),
            chunk: libp2p_stream::Behaviour::new(),
        })
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn names_are_cleaned_bounded_and_read_back_from_the_agent() {
        assert_eq!(
            clean_name("  bob's   laptop \n").as_deref(),
            Some("bob's laptop")
        );
        assert_eq!(
            clean_name("evil\u{1b}]0;x\u{7}\u{202e}gpj").as_deref(),
            Some("evil]0;xgpj")
        );
        assert_eq!(clean_name(" \t\u{200b} "), None);
        assert_eq!(
            clean_name(&"é".repeat(100)).unwrap().chars().count(),
            MAX_NAME_CHARS
        );
        let agent = agent_with_name("Carol (lab)");
        assert_eq!(
            agent,
            format!("iwant/{} (Carol lab)", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(agent_name(&agent).as_deref(), Some("Carol lab"));
        assert_eq!(agent_name("iwant/0.1.0"), None);
        assert_eq!(
            agent_name("js-libp2p/1.0 (bob)"),
            None,
            "only iwant agents carry names"
        );
        assert_eq!(agent_name(&format!("iwant/1 ({})", "x".repeat(300))), None);
        assert_eq!(
            agent_with_name("\u{1b}"),
            format!("iwant/{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
