//! iwant's integration tests, built into one binary.
//!
//! - `cli`: the real `iwant` binary's commands and error paths (root namespace, mDNS off).
//! - `folders`: which folders `iwant share` / `download-to` accept, and a shared folder
//!   missing at start.
//! - `loopback`: several nodes in this process on 127.0.0.1, mDNS off, explicit peers.
//! - `search`: the network index and search on loopback, hostile peers included.
//! - `download`: downloads on loopback, a hostile holder included.
//! - `ignore`: what is never shared (hidden files, secrets, the home, `.iwantignore`).
//! - `switch`: a shared folder switched mid-scan, missing at start, a stop in mid-hashing, a
//!   stop with the output pipe gone.
//! - `watch`: a share with an unreadable folder stays watched (runs the node as `nobody`
//!   under root; Linux only).
//! - `lab`: real binaries in Linux network namespaces joined by a bridge, with real mDNS.
//!   Needs root and `ip`; in CI (`CI=true`) it must run, elsewhere it skips with one line.
//! - `interop`: js-libp2p and py-libp2p against a running node (`tests/interop/`).
//! - `disk_full`: a download into a tmpfs that fills up (needs root).
//!
//! `lab`, `interop` and `disk_full` use Linux namespaces, tmpfs and `prctl`: Linux only.

mod cli;
#[cfg(target_os = "linux")]
mod disk_full;
mod download;
mod folders;
mod ignore;
mod index;
#[cfg(target_os = "linux")]
mod interop;
#[cfg(target_os = "linux")]
mod lab;
mod loopback;
mod ports;
mod search;
mod switch;
mod util;
#[cfg(target_os = "linux")]
mod watch;
