//! The CLI side: sends one request to the daemon and waits, for a bounded time, for its reply.

use std::{io, time::Duration};

use tokio::io::BufReader;

use super::{
    proto::{read_message, write_message, FrameError},
    transport, ControlError, Envelope, Reply, Request, Response, MAX_MESSAGE, MAX_REPLY,
    PROTOCOL_VERSION,
};
use crate::config::Home;

/// How long the client waits for the daemon's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// A failed control request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the home's control channel.
    #[error("the iwant node is not running (nothing answers at {channel}); start it with `iwant node{flag}`")]
    NotRunning {
        /// The control socket's path, or the pipe's name on Windows.
        channel: String,
        /// The `--home` flag needed to reach this home, or "".
        flag: String,
    },
    /// The channel exists but belongs to another user.
    #[error("permission denied on the control channel {channel}: {reason}")]
    PermissionDenied {
        /// The control socket's path, or the pipe's name on Windows.
        channel: String,
        /// Why.
        reason: String,
    },
    /// The daemon did not answer in time.
    #[error("the iwant node did not answer within {} s", REPLY_TIMEOUT.as_secs())]
    Timeout,
    /// The transport failed, or the reply was not understood.
    #[error("control channel: {0}")]
    Protocol(String),
    /// The daemon refused or failed the request.
    #[error(transparent)]
    Remote(#[from] ControlError),
}

/// A client for one node's control channel.
#[derive(Debug, Clone)]
pub struct Client {
    home: Home,
}

impl Client {
    /// A client for the node whose home is `home`.
    pub fn new(home: Home) -> Self {
        Self { home }
    }

    /// Sends `request` and returns the daemon's answer.
    pub async fn request(&self, request: Request) -> Result<Response, ClientError> {
        let mut replies = self.open(request).await?;
        match tokio::time::timeout(REPLY_TIMEOUT, replies.next()).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(Ok(Some(response))) => Ok(response),
            Ok(Ok(None)) => Err(ClientError::Protocol(
                "the node closed the connection without answering".into(),
            )),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Sends a [`Request::Follow`] and returns its replies as they come (no timeout between
    /// two of them: a download may wait long for a holder).
    pub async fn follow(&self, id: &str) -> Result<Replies, ClientError> {
        self.open(Request::Follow { id: id.to_owned() }).await
    }

    /// Connects and sends `request`.
    async fn open(&self, request: Request) -> Result<Replies, ClientError> {
        let socket = self.home.control_socket();
        let channel = transport::channel_name(&socket);
        let stream = transport::connect(&socket)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning {
                        channel,
                        flag: self.home.cli_flag(),
                    }
                }
                io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                    channel,
                    // Our own explanation (Windows: the pipe's server is another user), or the
                    // usual one.
                    reason: match e.get_ref() {
                        Some(why) => why.to_string(),
                        None => "only the user who started the node can control it".to_owned(),
                    },
                },
                _ => ClientError::Protocol(format!("cannot connect to {channel}: {e}")),
            })?;
        let mut stream = BufReader::new(stream);
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            request,
        };
        tokio::time::timeout(
            REPLY_TIMEOUT,
            write_message(&mut stream, &envelope, MAX_MESSAGE),
        )
        .await
        .map_err(|_| ClientError::Timeout)?
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Replies { stream })
    }
}

/// The replies to one request, read one at a time.
pub struct Replies {
    stream: BufReader<transport::Stream>,
}

impl Replies {
    /// The next reply; `None` when the node closed the connection after its last one.
    pub async fn next(&mut self) -> Result<Option<Response>, ClientError> {
        let reply = match read_message::<Reply>(&mut self.stream, MAX_REPLY).await {
            Ok(None) => return Ok(None),
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(ClientError::Protocol(
                    "the node closed the connection in the middle of a reply".into(),
                ))
            }
            Err(e) => return Err(ClientError::Protocol(e.to_string())),
            Ok(Some(reply)) => reply,
        };
        match (reply.ok, reply.error) {
            (_, Some(error)) => Err(ClientError::Remote(error)),
            (Some(ok), None) => Ok(Some(ok)),
            (None, None) => Err(ClientError::Protocol(
                "the reply holds neither a result nor an error".into(),
            )),
        }
    }
}
