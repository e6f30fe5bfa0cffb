//! Peer handling policy: which peers this node knows of, and when it dials them.
//!
//! [`Book`] is the address book (a plain struct, unit-tested); see its module for the policy:
//! one dialer per pair of nodes, exponential backoff, forgetting. [`Behaviour`] runs it in the
//! swarm: it dials the book's peers when their time comes and follows connections and failed
//! dials itself; the node only tells it what mDNS and peer exchange found.

mod behaviour;
pub mod book;

pub use behaviour::Behaviour;
pub use book::{Added, Book, Source};
