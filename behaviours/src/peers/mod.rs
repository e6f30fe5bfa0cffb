//! Peer handling policy: which peers this node knows of, and when it dials them.
//!
//! [`Book`] is the address book (a plain struct, unit-tested); see its module for the policy:
//! one dialer per pair of nodes, exponential backoff, forgetting.

pub mod book;

pub use book::{Book, Source};
