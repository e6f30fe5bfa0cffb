//! What only the leader does: hold the network-wide index and answer searches.

pub mod index;
