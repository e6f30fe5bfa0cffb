//! iwant's integration tests, built into one binary.
//!
//! - `cli`: the real `iwant` binary's commands and error paths (root namespace, mDNS off).
//! - `loopback`: several nodes in this process on 127.0.0.1, mDNS off, explicit peers.
//! - `search`: the network index and search on loopback, hostile peers included.
//! - `download`: downloads on loopback, a hostile holder included.
//! - `lab`: real binaries in Linux network namespaces joined by a bridge, with real mDNS.
//!   Needs root and `ip`; in CI (`CI=true`) it must run, elsewhere it skips with one line.

mod cli;
mod download;
mod index;
mod lab;
mod loopback;
mod search;
mod util;
