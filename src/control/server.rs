//! The daemon side: accepts control connections and answers each one's request.

use std::{future::Future, sync::Arc, time::Duration};

use futures::{stream::BoxStream, StreamExt};
use tokio::{
    io::{AsyncReadExt, BufReader},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    proto::{read_message, write_message, FrameError},
    transport::{Conn, Listener},
    ControlError, Envelope, ErrorKind, Reply, Request, Response, MAX_MESSAGE, MAX_REPLY,
    PROTOCOL_VERSION,
};

/// Most requests handled at once; more wait (their request read) for a place.
pub const MAX_CONNECTIONS: usize = 16;

/// Most connections whose request is still being read; more wait in the accept queue. A
/// connection holds no handling place while it sends its request, so idle connections (a
/// stuck script, a client that never writes) do not keep commands out.
pub const MAX_WAITING: usize = 256;

/// Most [`Request::Follow`] streams served at once. A follow gives its connection slot back
/// while it streams, so followed downloads never keep other commands out.
pub const MAX_FOLLOWERS: usize = 64;

/// How long a client may take to send its request (the CLI sends it as soon as it connects).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The control server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the socket or pipe failed.
    #[error("cannot open the control channel {path}: {source}")]
    Bind {
        /// The socket path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a handler answers: one reply, or a stream of replies that ends the connection when it
/// ends (or when the client goes away).
pub enum Answer {
    /// One reply (boxed: a reply is large, and a stream's first value moves often).
    One(Box<Result<Response, ControlError>>),
    /// Replies as they come ([`Request::Follow`]).
    Stream(BoxStream<'static, Response>),
}

impl From<Result<Response, ControlError>> for Answer {
    fn from(result: Result<Response, ControlError>) -> Self {
        Answer::One(Box::new(result))
    }
}

/// Serves requests on `listener` with `handler` until `shutdown` is cancelled. Connections in
/// flight are finished before it returns. The caller keeps its own reference to the listener,
/// so the socket (or pipe) lasts as long as the caller wants, not only as long as this task.
pub async fn serve<H, Fut>(listener: Arc<Listener>, handler: H, shutdown: CancellationToken)
where
    H: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send,
{
    let places = Places {
        handling: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        followers: Arc::new(Semaphore::new(MAX_FOLLOWERS)),
    };
    let waiting = Arc::new(Semaphore::new(MAX_WAITING));
    let tasks = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = waiting.clone().acquire_owned() => permit.expect("bug: semaphore closed"),
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, same_user)) => {
                let handler = handler.clone();
                let places = places.clone();
                let stop = shutdown.clone();
                tasks.spawn(async move {
                    if let Err(e) = answer(stream, same_user, handler, permit, places, stop).await {
                        tracing::debug!(error = %e, "control connection failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "control channel accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tasks.close();
    tasks.wait().await;
}

/// The places a connection takes once its request is read: one of the [`MAX_CONNECTIONS`]
/// while it is handled, or one of the [`MAX_FOLLOWERS`] while it follows a download.
#[derive(Clone)]
struct Places {
    handling: Arc<Semaphore>,
    followers: Arc<Semaphore>,
}

async fn answer<H, Fut>(
    stream: impl Conn,
    same_user: bool,
    handler: H,
    waiting: OwnedSemaphorePermit,
    places: Places,
    shutdown: CancellationToken,
) -> Result<(), FrameError>
where
    H: Fn(Request) -> Fut,
    Fut: Future<Output = Answer>,
{
    let mut stream = BufReader::new(stream);
    // Read the request first even when refusing, so the client gets the refusal rather than a
    // broken pipe.
    let request = tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_message::<Envelope>(&mut stream, MAX_MESSAGE),
    )
    .await;
    drop(waiting);
    let handling = places
        .handling
        .clone()
        .acquire_owned()
        .await
        .expect("bug: semaphore closed");
    let result = match request {
        _ if !same_user => Err(ControlError::new(
            ErrorKind::PermissionDenied,
            "only the user who runs this iwant node may control it",
        )),
        Err(_) => Err(ControlError::new(
            ErrorKind::BadRequest,
            format!("no request within {REQUEST_TIMEOUT:?}"),
        )),
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(FrameError::Io(e))) => return Err(FrameError::Io(e)),
        Ok(Err(e)) => Err(ControlError::new(ErrorKind::BadRequest, e.to_string())),
        Ok(Ok(Some(env))) if env.version != PROTOCOL_VERSION => Err(ControlError::new(
            ErrorKind::UnsupportedVersion,
            format!(
                "this node speaks control protocol version {PROTOCOL_VERSION}, the client {}; use the same iwant version for both",
                env.version
            ),
        )),
        Ok(Ok(Some(env))) => match handler(env.request).await {
            Answer::One(result) => *result,
            Answer::Stream(mut replies) => {
                let Ok(_follower) = places.followers.clone().try_acquire_owned() else {
                    let busy = ControlError::new(
                        ErrorKind::BadRequest,
                        format!("{MAX_FOLLOWERS} downloads are followed already; leave one, or watch them all with `iwant status`"),
                    );
                    return write_message(&mut stream, &Reply::new(Err(busy)), MAX_REPLY).await;
                };
                // A follow may last as long as its download: other commands get its place.
                drop(handling);
                // Until the stream ends, the client goes away or the node stops. The client sends
                // nothing more, so a read returns only when it closes (or breaks the protocol):
                // a client that left is noticed at once, not at the next reply.
                let mut probe = [0u8; 1];
                loop {
                    let reply = tokio::select! {
                        reply = replies.next() => reply,
                        _ = stream.read(&mut probe) => None,
                        _ = shutdown.cancelled() => None,
                    };
                    let Some(reply) = reply else {
                        return Ok(());
                    };
                    write_message(&mut stream, &Reply::new(Ok(reply)), MAX_REPLY).await?;
                }
            }
        },
    };
    write_message(&mut stream, &Reply::new(result), MAX_REPLY).await
}

#[cfg(test)]
mod tests {
    use futures::stream;

    use super::*;
    use crate::{
        config::{Folders, Home},
        control::{Client, ClientError},
    };

    /// A server whose follows never end and whose other requests answer at once.
    async fn server(home: &Home) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = Arc::new(Listener::bind(&home.control_socket()).await.unwrap());
        let shutdown = CancellationToken::new();
        let handler = |request: Request| async move {
            match request {
                Request::Follow { .. } => Answer::Stream(stream::pending().boxed()),
                _ => Answer::from(Ok(Response::Folders(Folders {
                    shared_dir: "/s".into(),
                    download_dir: "/d".into(),
                }))),
            }
        };
        let task = tokio::spawn(serve(listener, handler, shutdown.clone()));
        (shutdown, task)
    }

    #[tokio::test]
    async fn followed_downloads_never_keep_other_commands_out() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        let (shutdown, task) = server(&home).await;
        let client = Client::new(home);
        let mut follows = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 4 {
            follows.push(client.follow("abcd").await.unwrap());
        }
        let answer = tokio::time::timeout(Duration::from_secs(10), client.request(Request::Config))
            .await
            .expect("a command waits behind followed downloads");
        assert!(matches!(answer, Ok(Response::Folders(_))), "{answer:?}");
        shutdown.cancel();
        drop(follows);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn idle_connections_do_not_keep_commands_out() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        let (shutdown, task) = server(&home).await;
        // 200 connections that never send a request (a stuck script).
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(
                crate::control::transport::connect(&home.control_socket())
                    .await
                    .unwrap(),
            );
        }
        let client = Client::new(home);
        // Well inside the request timeout: the command does not wait for the idle ones.
        let answer = tokio::time::timeout(REQUEST_TIMEOUT / 2, client.request(Request::Config))
            .await
            .expect("a command waits behind idle connections");
        assert!(matches!(answer, Ok(Response::Folders(_))), "{answer:?}");
        shutdown.cancel();
        drop(idle);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_follow_whose_client_left_gives_its_place_back_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        let (shutdown, task) = server(&home).await;
        let client = Client::new(home);
        // The followed downloads never change: only the client's leaving can end a follow.
        // Three rounds of all the follows the node allows, each dropped before the next:
        // every follow of a round must be taken (not refused) within the deadline.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for round in 0..3 {
            let mut follows = Vec::new();
            while follows.len() < MAX_FOLLOWERS {
                let mut follow = client.follow("abcd").await.unwrap();
                match tokio::time::timeout(Duration::from_millis(20), follow.next()).await {
                    // Taken: a never-changing follow sends nothing.
                    Err(_) => follows.push(follow),
                    Ok(Err(ClientError::Remote(e))) if e.message.contains("followed already") => {
                        assert!(
                            tokio::time::Instant::now() < deadline,
                            "round {round}: the places of the clients that left are still held"
                        );
                    }
                    Ok(other) => panic!("round {round}: {other:?}"),
                }
            }
            drop(follows);
        }
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn follows_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        let (shutdown, task) = server(&home).await;
        let client = Client::new(home);
        let mut follows = Vec::new();
        for _ in 0..MAX_FOLLOWERS {
            follows.push(client.follow("abcd").await.unwrap());
        }
        // The follows are taken in turn: wait until the node holds them all.
        let mut refused = None;
        for _ in 0..200 {
            let mut extra = client.follow("abcd").await.unwrap();
            match tokio::time::timeout(Duration::from_millis(50), extra.next()).await {
                Ok(Err(ClientError::Remote(e))) => {
                    refused = Some(e);
                    break;
                }
                Ok(other) => panic!("a follow beyond the bound: {other:?}"),
                // Taken: the node was still accepting the others; drop it and ask again.
                Err(_) => drop(extra),
            }
        }
        let refused = refused.expect("a follow beyond the bound is refused");
        assert!(refused.message.contains("followed already"), "{refused:?}");
        shutdown.cancel();
        drop(follows);
        task.await.unwrap();
    }
}
