//! iwant: find and fetch files on your LAN, with no server.
//!
//! The `iwant` binary is a thin front end over this library. The main pieces:
//!
//! - [`daemon`]: starts a node ([`daemon::start`]) and owns its shutdown.
//! - [`net`]: the one task that drives the libp2p `Swarm`, and [`net::NetworkClient`], the
//!   cloneable handle everything else uses to talk to it.
//! - [`control`]: the local control channel between the CLI and the daemon.
//! - [`config`]: the node's home, its config file and the folder rules.
//! - [`store`]: the SQLite database.
//! - [`cli`]: the command line.
//!
//! `docs/architecture.md` shows how they fit together.

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fsio;
pub mod leader;
pub mod limits;
pub mod net;
pub mod share;
pub mod store;
pub mod transfer;
