//! The control channel's messages and their framing.

use std::path::PathBuf;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::views::{Download, IndexInfo, LeftOut, PeerInfo, Served};
use crate::config::Folders;

/// The version of the control protocol. A server answers a request of another version with
/// [`ErrorKind::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest request a server accepts, newline included.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// The largest reply a client accepts (a listing of a large share is big), newline included.
pub const MAX_REPLY: usize = 256 * 1024 * 1024;

/// What the client sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    /// Always [`PROTOCOL_VERSION`] for this build.
    pub version: u32,
    /// The request.
    pub request: Request,
}

/// The most skipped entries one `iwant ls --skipped` lists.
pub const MAX_SKIPPED_LISTED: u64 = 1_000;

/// The shortest time between two replies to a [`Request::Follow`].
pub const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The requests a client can make.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// The node's state: identity, addresses, peers, folders.
    Status,
    /// The two folders.
    Config,
    /// Share another folder. The path must be absolute. The folder rules apply
    /// ([`crate::config::folders`]).
    SetShared {
        /// The new shared folder.
        path: PathBuf,
        /// Allow what only `--force` allows (the user's home, a folder containing it).
        #[serde(default)]
        force: bool,
        /// Create the folder if it is missing.
        #[serde(default)]
        create: bool,
    },
    /// Download into another folder. The path must be absolute. The folder rules apply.
    SetDownload {
        /// The new download folder.
        path: PathBuf,
        /// Allow what only `--force` allows (the user's home).
        #[serde(default)]
        force: bool,
        /// Create the folder if it is missing.
        #[serde(default)]
        create: bool,
    },
    /// Everything this node shares, or with `errors`, what it could not index.
    List {
        /// List the entries that could not be indexed instead.
        #[serde(default)]
        errors: bool,
        /// List the entries left out on purpose instead (at most [`MAX_SKIPPED_LISTED`]).
        #[serde(default)]
        skipped: bool,
    },
    /// Search what the whole network shares, by name (asks the leader).
    Search {
        /// The words.
        text: String,
        /// Only files or only directories.
        #[serde(default)]
        kind: Option<crate::share::Kind>,
        /// How many results, best first (1 to 200).
        limit: u32,
        /// How many of the best results to skip.
        #[serde(default)]
        offset: u32,
    },
    /// Download the content whose id starts with `id` (or find the download of it that runs).
    Get {
        /// An id or a unique prefix of at least 4 hex digits.
        id: String,
        /// The name to save it under (one name, not a path) instead of the holder's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The folder to save it in (absolute) instead of the download folder; the folder
        /// rules of a download folder apply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<PathBuf>,
        /// Fetch it even if this node has it already.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        again: bool,
    },
    /// The downloads of this run (running and recently ended), or with `id`, the one whose id
    /// starts with it.
    Downloads {
        /// Only the download whose id starts with this.
        #[serde(default)]
        id: Option<String>,
    },
    /// Follow the download whose id starts with `id`: a `download` reply at once, another
    /// each time its progress changes (at most every [`FOLLOW_EVERY`]), the last one when it
    /// ends; then the node closes the connection. (No polling: `iwant get` uses this.)
    Follow {
        /// An id or a unique prefix of at least 4 hex digits.
        id: String,
    },
    /// Stop a running download and remove its partial data.
    Cancel {
        /// An id or a unique prefix of at least 4 hex digits.
        id: String,
    },
    /// Forget the downloads that ended (done, failed, cancelled): `status` lists running ones
    /// only until more end.
    ClearDownloads,
    /// Stop the node (as Ctrl-C would): it answers, then shuts down gracefully.
    Stop,
    /// Set this node's name (saved in config.toml; peers see it after the node restarts).
    SetName {
        /// The new name (cleaned; at most 32 characters).
        name: String,
    },
    /// What another node's shared folder holds at `path` and below (asks that node).
    Browse {
        /// The node: its name (any case), or its whole peer id, or at least 4 characters
        /// from the start or the end of it.
        peer: String,
        /// A folder (or file) of its share, `/` between names; "" for all of it.
        #[serde(default)]
        path: String,
    },
}

/// Most entries a [`Request::Browse`] answer carries.
pub const MAX_BROWSED: usize = 100_000;

/// What the server sends back: exactly one of `ok` and `error` is present.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    /// The server's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The answer, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Response>,
    /// The error, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ControlError>,
}

impl Reply {
    /// Wraps a handler's result.
    pub fn new(result: Result<Response, ControlError>) -> Self {
        let (ok, error) = match result {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        Self {
            version: PROTOCOL_VERSION,
            ok,
            error,
        }
    }
}

/// Successful answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(Box<StatusReply>),
    /// Answer to [`Request::Config`], [`Request::SetShared`] and [`Request::SetDownload`]:
    /// the folders now in force.
    Folders(Folders),
    /// Answer to [`Request::List`]: every indexed entry, sorted by path.
    Entries {
        /// The entries.
        entries: Vec<crate::share::IndexEntry>,
    },
    /// Answer to [`Request::List`] with `errors`: what could not be indexed, and why.
    ScanErrors {
        /// The entries.
        errors: Vec<LeftOut>,
    },
    /// Answer to [`Request::List`] with `skipped`: what was left out on purpose, and by which
    /// rule, at most [`MAX_SKIPPED_LISTED`] of `total`.
    Skipped {
        /// The entries, sorted by path.
        skipped: Vec<LeftOut>,
        /// How many are stored in all.
        total: u64,
    },
    /// Answer to [`Request::Search`].
    SearchResults(SearchReply),
    /// Answer to [`Request::Get`] and [`Request::Cancel`]: that download's progress.
    Download(Download),
    /// Answer to [`Request::Get`] for content this node has already (in its shared or
    /// download folder), unless `again`: nothing is fetched.
    AlreadyHave {
        /// The full id.
        id: crate::share::Id,
        /// Where it is.
        path: PathBuf,
    },
    /// Answer to [`Request::Downloads`].
    Downloads {
        /// Running downloads first, then those that ended.
        downloads: Vec<Download>,
    },
    /// Answer to [`Request::Stop`]: the node stops now.
    Stopping {
        /// The node's process id.
        pid: u32,
    },
    /// Answer to [`Request::SetName`].
    Named {
        /// The name saved, as cleaned.
        name: String,
        /// The name peers see until the node restarts.
        announced: String,
    },
    /// Answer to [`Request::ClearDownloads`].
    Cleared {
        /// How many ended downloads were forgotten.
        cleared: u64,
    },
    /// Answer to [`Request::Browse`]: the node's entries at and below the path, sorted by
    /// path (at most [`MAX_BROWSED`] of `total`).
    Browsed {
        /// The node's peer id.
        peer: String,
        /// Its name (or the end of its id when it announced none).
        name: String,
        /// How many entries it has at and below the path in all.
        total: u64,
        /// The entries.
        entries: Vec<crate::share::IndexEntry>,
    },
}

/// Search results, as `iwant search --json` prints them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchReply {
    /// The query as asked.
    pub query: String,
    /// The leader that answered.
    pub leader: String,
    /// How many distinct results matched (capped at 1,000).
    pub total: u64,
    /// Entries the leader holds, over all nodes.
    pub indexed: u64,
    /// Nodes whose index the leader holds.
    pub nodes: u32,
    /// The results, best first.
    pub results: Vec<SearchResult>,
}

/// One search result: the leader's hit for a distinct piece of content (id, kind, size, path,
/// score, holders, holder count: flattened into the same JSON object), plus what this node
/// adds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchResult {
    /// The file or directory name (the last component of the hit's path).
    pub name: String,
    /// Whether this node holds it.
    pub local: bool,
    /// The other holders listed in `holders`, as people know them: each one's name, or the
    /// end of its peer id while it has none (same order).
    #[serde(default)]
    pub holder_names: Vec<String>,
    /// The hit as the leader sent it.
    #[serde(flatten)]
    pub hit: iwant_behaviours::search::Hit,
}

/// The node's state, as `iwant status --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReply {
    /// The daemon's version.
    pub version: String,
    /// This node's peer id.
    pub peer_id: String,
    /// This node's name, as peers see it.
    #[serde(default)]
    pub name: String,
    /// The name saved with `iwant name` that peers will see from the node's next start, when
    /// it differs from `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_name: Option<String>,
    /// The addresses this node listens on.
    pub listen_addrs: Vec<String>,
    /// Connected peers, sorted by peer id.
    pub peers: Vec<PeerInfo>,
    /// The shared folder.
    pub shared_dir: PathBuf,
    /// The download folder.
    pub download_dir: PathBuf,
    /// The node's home directory.
    pub home: PathBuf,
    /// The index of the shared folder.
    pub index: IndexInfo,
    /// The elected leader's peer id (this node's own when it leads); `None` while there is
    /// none.
    pub leader: Option<String>,
    /// The election term.
    pub term: u64,
    /// The fingerprint of the private network's key (`iwant node --network-key`); `None` for
    /// an open network.
    #[serde(default)]
    pub network_key: Option<String>,
    /// Downloads of this run: running ones first, then those that ended.
    #[serde(default)]
    pub downloads: Vec<Download>,
    /// What this node has served to peers since it started.
    #[serde(default)]
    pub served: Served,
    /// What this node offers of what it downloaded (the files its downloads placed in the
    /// download folder, unchanged); `None` when `offer_downloads = false`.
    #[serde(default)]
    pub offered_downloads: Option<IndexInfo>,
}

/// A typed error: a stable `kind` for programs, a `message` for people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ControlError {
    /// What went wrong, for programs.
    pub kind: ErrorKind,
    /// What went wrong and what to do about it, for people.
    pub message: String,
}

impl ControlError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The kinds of [`ControlError`]. New kinds may be added; clients treat unknown ones as
/// [`ErrorKind::Internal`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request's protocol version is not this server's.
    UnsupportedVersion,
    /// The request could not be parsed or is too large.
    BadRequest,
    /// The folders break a rule (same, nested, missing, refused, unusable).
    InvalidFolders,
    /// The caller is not the user who runs the node.
    PermissionDenied,
    /// The node is shutting down.
    ShuttingDown,
    /// No leader was elected or none answered in time.
    NoLeader,
    /// No node shares the id, or no download has it.
    NotFound,
    /// An id prefix (or a node's name) matches several; the message lists them.
    Ambiguous,
    /// A peer did not answer, or not in time.
    Unreachable,
    /// Anything else; the message says what.
    #[serde(other)]
    Internal,
}

/// A framing or decoding failure.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The message is larger than allowed ([`MAX_MESSAGE`] or [`MAX_REPLY`]).
    #[error("message larger than allowed")]
    TooLarge,
    /// The message is not the expected JSON.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Reads one newline-terminated JSON message of at most `limit` bytes; `None` at a clean end
/// of stream.
pub(crate) async fn read_message<T: DeserializeOwned>(
    reader: &mut (impl AsyncBufRead + Unpin),
    limit: usize,
) -> Result<Option<T>, FrameError> {
    let mut line = Vec::new();
    let n = reader
        .take(limit as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if n > limit {
        return Err(FrameError::TooLarge);
    }
    if line.last() != Some(&b'\n') {
        return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(Some(serde_json::from_slice(&line)?))
}

/// Writes one message of at most `limit` bytes followed by a newline, and flushes.
pub(crate) async fn write_message<T: Serialize>(
    writer: &mut (impl AsyncWrite + Unpin),
    message: &T,
    limit: usize,
) -> Result<(), FrameError> {
    let mut bytes = serde_json::to_vec(message)?;
    if bytes.len() >= limit {
        return Err(FrameError::TooLarge);
    }
    bytes.push(b'\n');
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_shape() {
        let env = Envelope {
            version: 1,
            request: Request::SetShared {
                path: "/data".into(),
                force: false,
                create: true,
            },
        };
        assert_eq!(
            serde_json::to_string(&env).unwrap(),
            r#"{"version":1,"request":{"type":"set_shared","path":"/data","force":false,"create":true}}"#
        );
        // Clients from before `force` and `create` send neither.
        let old: Envelope =
            serde_json::from_str(r#"{"version":1,"request":{"type":"set_download","path":"/d"}}"#)
                .unwrap();
        assert_eq!(
            old.request,
            Request::SetDownload {
                path: "/d".into(),
                force: false,
                create: false
            }
        );
        let reply = Reply::new(Err(ControlError::new(ErrorKind::InvalidFolders, "x")));
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"version":1,"error":{"kind":"invalid_folders","message":"x"}}"#
        );
    }

    #[test]
    fn a_search_result_is_one_flat_json_object_with_a_hex_id() {
        let result = SearchResult {
            name: "a.txt".into(),
            local: true,
            holder_names: vec![],
            hit: iwant_behaviours::search::Hit {
                id: crate::share::Id::of(b"a"),
                kind: crate::share::Kind::File,
                size: 3,
                path: "d/a.txt".into(),
                score: 7,
                holders: vec!["12D3Peer".into()],
                holder_count: 1,
            },
        };
        let json = serde_json::to_value(&result).unwrap();
        let keys: std::collections::BTreeSet<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "holder_count",
                "holder_names",
                "holders",
                "id",
                "kind",
                "local",
                "name",
                "path",
                "score",
                "size"
            ]
            .into()
        );
        assert_eq!(json["id"], result.hit.id.to_hex());
        assert_eq!(
            serde_json::from_value::<SearchResult>(json).unwrap(),
            result
        );
    }

    #[test]
    fn unknown_error_kinds_read_as_internal() {
        let e: ControlError =
            serde_json::from_str(r#"{"kind":"from_the_future","message":"m"}"#).unwrap();
        assert_eq!(e.kind, ErrorKind::Internal);
    }

    #[tokio::test]
    async fn oversized_and_truncated_messages_are_errors() {
        let big = vec![b' '; MAX_MESSAGE + 10];
        let mut reader = &big[..];
        let r: Result<Option<Envelope>, _> = read_message(&mut reader, MAX_MESSAGE).await;
        assert!(matches!(r, Err(FrameError::TooLarge)), "{r:?}");
        let mut reader = &b"{\"version\":1"[..];
        let r: Result<Option<Envelope>, _> = read_message(&mut reader, MAX_MESSAGE).await;
        assert!(matches!(r, Err(FrameError::Io(_))), "{r:?}");
        let mut reader = &b"not json\n"[..];
        let r: Result<Option<Envelope>, _> = read_message(&mut reader, MAX_MESSAGE).await;
        assert!(matches!(r, Err(FrameError::Malformed(_))), "{r:?}");
        let mut reader = &b""[..];
        let r: Option<Envelope> = read_message(&mut reader, MAX_MESSAGE).await.unwrap();
        assert!(r.is_none());
    }

    fn read<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<Option<T>, FrameError> {
        futures::executor::block_on(read_message(&mut &bytes[..], limit))
    }

    fn envelopes() -> Vec<Envelope> {
        [
            Request::Status,
            Request::Config,
            Request::SetShared {
                path: "/data/ü".into(),
                force: true,
                create: false,
            },
            Request::SetDownload {
                path: "/d".into(),
                force: false,
                create: true,
            },
            Request::List {
                errors: true,
                skipped: false,
            },
            Request::List {
                errors: false,
                skipped: true,
            },
            Request::Search {
                text: "a \"quoted\" \\ word\n".into(),
                kind: None,
                limit: 200,
                offset: u32::MAX,
            },
            Request::Get {
                id: "abcd".into(),
                name: Some("x.mkv".into()),
                to: None,
                again: true,
            },
            Request::Follow { id: "abcd".into() },
            Request::Downloads { id: None },
            Request::Cancel { id: "ef01".into() },
            Request::ClearDownloads,
            Request::Stop,
            Request::SetName {
                name: "bob's laptop".into(),
            },
            Request::Browse {
                peer: "bob".into(),
                path: "music/älbum".into(),
            },
        ]
        .into_iter()
        .map(|request| Envelope {
            version: PROTOCOL_VERSION,
            request,
        })
        .collect()
    }

    #[test]
    fn envelopes_round_trip_and_truncations_are_refused() {
        for env in envelopes() {
            let mut out = Vec::new();
            futures::executor::block_on(write_message(&mut out, &env, MAX_MESSAGE)).unwrap();
            assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "one line");
            assert_eq!(read::<Envelope>(&out, MAX_MESSAGE).unwrap(), Some(env));
            for cut in 1..out.len() {
                assert!(
                    read::<Envelope>(&out[..cut], MAX_MESSAGE).is_err(),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn deep_nesting_and_long_lines_are_refused_on_a_small_stack() {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                for (prefix, nest) in [
                    ("", "["),
                    ("", "{\"a\":"),
                    (
                        "{\"version\":1,\"request\":{\"type\":\"status\",\"x\":",
                        "[",
                    ),
                ] {
                    let mut line = [prefix, &nest.repeat(100_000)].concat().into_bytes();
                    line.push(b'\n');
                    let r = read::<Envelope>(&line, MAX_MESSAGE * 2);
                    assert!(matches!(r, Err(FrameError::Malformed(_))), "{nest}: {r:?}");
                    let r = read::<Reply>(&line, MAX_MESSAGE * 2);
                    assert!(matches!(r, Err(FrameError::Malformed(_))), "{nest}: {r:?}");
                }
            })
            .unwrap()
            .join()
            .unwrap();
        // A valid message padded to exactly the limit, newline included, is read; a longer
        // line is too large, whether or not its newline ever comes.
        let env = r#"{"version":1,"request":{"type":"status"}}"#;
        let padded = |len: usize| {
            let mut line = env.as_bytes().to_vec();
            line.resize(len - 1, b' ');
            line.push(b'\n');
            line
        };
        let limit = 100;
        assert!(read::<Envelope>(&padded(limit), limit).unwrap().is_some());
        for len in [limit + 2, limit + 50, 10 * limit] {
            let r = read::<Envelope>(&padded(len), limit);
            assert!(matches!(r, Err(FrameError::TooLarge)), "{len}: {r:?}");
            let r = read::<Envelope>(&padded(len)[..len - 1], limit);
            assert!(
                matches!(r, Err(FrameError::TooLarge)),
                "{len} without newline: {r:?}"
            );
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use super::{envelopes, read};

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

            /// Any bytes, or a valid envelope with bytes changed: an error or a message, never a
            /// panic; and a message only from a whole line within the limit.
            #[test]
            fn arbitrary_lines_never_panic_the_reader(
                bytes in prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..200),
                    (
                        prop::sample::select(envelopes()),
                        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                    )
                        .prop_map(|(env, edits)| {
                            let mut line = serde_json::to_vec(&env).unwrap();
                            line.push(b'\n');
                            for (i, b) in edits {
                                let i = i.index(line.len());
                                line[i] = b;
                            }
                            line
                        }),
                ],
                limit in 1usize..256,
            ) {
                if let Ok(Some(_)) = read::<Envelope>(&bytes, limit) {
                    let end = bytes.iter().position(|b| *b == b'\n').expect("a whole line");
                    // The limit counts the newline.
                    prop_assert!(end < limit);
                }
                let _ = read::<Reply>(&bytes, limit);
                let _ = read::<ControlError>(&bytes, limit);
            }
        }
    }
}
