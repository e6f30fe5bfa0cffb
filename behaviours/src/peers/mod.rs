//! Peer handling policy: which peers this node knows of, when it dials them, and when a
//! connection counts as dead.
//!
//! [`Book`] is the address book (a plain struct, unit-tested); see its module for the policy:
//! one dialer per pair of nodes, exponential backoff, forgetting. [`Behaviour`] runs it in the
//! swarm: it dials the book's peers when their time comes and follows connections and failed
//! dials itself; it keeps the user's `--peer` addresses connected ([`Behaviour::pin`]) and
//! closes connections whose liveness probes go unanswered ([`Behaviour::probed`]). The node
//! only tells it what mDNS and peer exchange found and what ping answered.

mod behaviour;
pub mod book;

pub use behaviour::{
    Behaviour, PinError, Probe, LIVENESS_TIMEOUT, MAX_DIALS, MAX_PINS, PIN_REDIAL,
};
pub use book::{Added, Book, Source};
