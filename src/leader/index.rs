//! The leader's in-memory index of every node's entries, and search over it.
