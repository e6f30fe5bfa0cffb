//! Local discovery by multicast DNS, on the wire as [libp2p's mDNS discovery] (rust-libp2p's
//! `libp2p-mdns` and js-libp2p find iwant nodes and are found by them), built for a LAN where
//! one host may lie. See docs/decisions/0004-our-own-mdns.md for why it is ours.
//!
//! - **The source rule.** An answer's address is taken only if it is
//!   `/ip4/<the datagram's source>/tcp/<port>` ([`at_source`]): an answer can point this node
//!   at the host it came from, never at a third one (short of forging its source address,
//!   which the per-IP bound below caps).
//! - **Bounded.** At most [`MAX_PEERS`] peers, [`MAX_PEERS_PER_IP`] announced from one IP,
//!   [`MAX_ADDRS`] addresses each; at most 16 peers and 8 addresses read from one datagram,
//!   [`MAX_DATAGRAMS_PER_SECOND`] datagrams read per second per interface.
//! - **TTLs clamped.** An address is forgotten when not announced again within its TTL, at
//!   most [`MAX_TTL`], and at most [`UNPROVEN_TTL`] while no connection to its peer was ever
//!   established: a one-off burst of forged answers is gone in minutes, not the hour its TTL
//!   asks for. A TTL of 0 forgets at once.
//! - **No amplifier.** However many queries arrive, an interface answers at most once per
//!   [`ANSWER_GAP`] (answers are multicast: one serves every asker).
//! - **Announced.** An interface also answers unasked when its addresses change, and never
//!   with none: the others stop asking once anyone answered them.
//!
//! IPv4 only (as rust-libp2p's default); loopback interfaces are skipped.
//!
//! [libp2p's mDNS discovery]: https://github.com/libp2p/specs/blob/master/discovery/mdns.md

mod behaviour;
mod iface;
mod packet;
mod table;

pub use behaviour::{Behaviour, Config, Event};
pub use iface::{at_source, ANSWER_GAP, MAX_DATAGRAMS_PER_SECOND};
pub use packet::{decode, query, response, Announcement, Packet};
pub use table::{MAX_ADDRS, MAX_PEERS, MAX_PEERS_PER_IP, MAX_TTL, UNPROVEN_TTL};
