//! The local control channel between the CLI and the running daemon.
//!
//! Each CLI command opens one connection, sends one [`Envelope`] holding a [`Request`] and reads
//! one [`Reply`]: a newline-terminated JSON document each way, at most [`MAX_MESSAGE`] bytes.
//! Errors are data, a [`ErrorKind`] plus a message, so the CLI never matches strings. The full
//! specification is `docs/control.md`.
//!
//! Only the user who runs the daemon can reach it: on Unix the channel is the socket
//! `control.sock` (mode 0600) in the node's home (mode 0700), and the server also refuses peers
//! whose credentials show another user id; on Windows it is a local-only named pipe.

pub mod client;
mod handler;
mod proto;
pub mod server;
mod transport;
mod views;

pub use client::{Client, ClientError};
pub use handler::Handler;
pub use proto::{
    ControlError, Envelope, ErrorKind, Reply, Request, Response, SearchReply, SearchResult,
    StatusReply, FOLLOW_EVERY, MAX_BROWSED, MAX_MESSAGE, MAX_REPLY, MAX_SKIPPED_LISTED,
    PROTOCOL_VERSION,
};
pub use server::{serve, Answer, ServerError};
pub use transport::Listener;
pub use views::{Download, DownloadState, Hashing, IndexInfo, LeftOut, PeerInfo, Served, Watch};
