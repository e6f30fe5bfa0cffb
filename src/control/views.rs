//! What the replies show of the node's rooms: downloads, the index, peers, what was served.
//!
//! These are the control protocol's own types (`docs/control.md`), kept apart from the rooms'
//! internal structs so that a room can change without changing what programs read; the
//! handler turns the rooms' values into them (`handler.rs`). They use the house's shared
//! vocabulary: [`Id`], [`Kind`], [`Folders`](crate::config::Folders) and
//! [`IndexEntry`](crate::share::IndexEntry).

use std::path::PathBuf;

use iwant_behaviours::{id::Id, wire::Kind};
use serde::{Deserialize, Serialize};

/// A download's progress, as `iwant get` and `iwant status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Download {
    /// The content id (64 hex digits).
    pub id: Id,
    /// The name it gets in the download folder.
    pub name: String,
    /// File or directory.
    pub kind: Kind,
    /// Where it is.
    pub state: DownloadState,
    /// Why it waits or failed, or what it does now.
    pub message: Option<String>,
    /// Bytes to fetch (identical contents counted once).
    pub bytes_total: u64,
    /// Bytes verified so far.
    pub bytes_done: u64,
    /// Distinct files in all (1 for a file).
    pub files_total: u64,
    /// Distinct files complete.
    pub files_done: u64,
    /// Peers it is fetching from now.
    pub peers: u32,
    /// Some of them (at most 8), as people know them: names, or `…` and the end of the id.
    #[serde(default)]
    pub from: Vec<String>,
    /// Bytes per second over the last seconds, measured by the node (0 while stalled).
    pub rate: u64,
    /// Milliseconds left at that rate, while fetching at a rate above 0.
    #[serde(default)]
    pub eta_ms: Option<u64>,
    /// Where the finished download is.
    pub path: Option<PathBuf>,
    /// Bytes fetched from the network so far in this run (verified or not).
    pub bytes_fetched: u64,
    /// Bytes copied from this node's own shared folder instead of fetched.
    pub bytes_local: u64,
    /// Bytes found verified on disk when this run of the download started (resume).
    pub bytes_resumed: u64,
    /// Milliseconds from the start of this run of the download to now, or to its end.
    pub elapsed_ms: u64,
    /// Set while the download cannot write its data (a full disk, a read-only or removed
    /// download folder): what failed. It keeps what it has and retries every few seconds.
    #[serde(default)]
    pub write_error: Option<String>,
}

/// Where a download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownloadState {
    /// Finding holders, fetching the piece list or manifest.
    Starting,
    /// Fetching units.
    Fetching,
    /// No holder is reachable (or the disk is full); it goes on by itself when that changes.
    Waiting,
    /// Checking the finished data once more.
    Verifying,
    /// Complete: `path` says where it is.
    Done,
    /// Gave up; `message` says why.
    Failed,
    /// Cancelled by the user; its partial data is removed.
    Cancelled,
}

impl DownloadState {
    /// Whether the download has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DownloadState::Done | DownloadState::Failed | DownloadState::Cancelled
        )
    }
}

/// The index of the shared folder, as `iwant status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexInfo {
    /// Whether the first scan of the shared folder has finished.
    pub ready: bool,
    /// Indexed files.
    pub files: u64,
    /// Indexed directories, the shared folder included.
    pub dirs: u64,
    /// Total bytes of the indexed files.
    pub bytes: u64,
    /// Entries that could not be indexed (`iwant ls --errors`).
    pub errors: u64,
    /// Entries left out on purpose (`iwant ls --skipped`), counted up to 10,000.
    #[serde(default)]
    pub skipped: u64,
    /// The index version: it grows by one with every change.
    pub version: u64,
    /// Hashing progress while a scan hashes files; `None` when idle.
    pub hashing: Option<Hashing>,
    /// Files hashed since the node started (unchanged files are never hashed again).
    pub hashed_files: u64,
    /// Bytes of file content read for hashing since the node started.
    pub hashed_bytes: u64,
    /// The shared folder does not exist (an unmounted disk, a folder moved away): nothing is
    /// shared until it appears again.
    #[serde(default)]
    pub root_missing: bool,
    /// Whether changes are seen as they happen.
    #[serde(default)]
    pub watch: Watch,
}

/// How far a scan's hashing has got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hashing {
    /// Files hashed so far in this scan.
    pub files_done: u64,
    /// Files this scan hashes.
    pub files_total: u64,
    /// Bytes hashed so far.
    pub bytes_done: u64,
    /// Bytes this scan hashes.
    pub bytes_total: u64,
}

/// Whether the shared folder's changes are seen as they happen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Watch {
    /// Not watching (yet): the first scan runs, or there is no shared folder.
    #[default]
    Off,
    /// Every folder of the share is watched.
    Full,
    /// Some folders cannot be watched (e.g. unreadable); changes there are found by the
    /// periodic rescan only. The rest is watched.
    Partial {
        /// How many folders are not watched.
        unwatched: u64,
    },
    /// No watcher at all: every change waits for the periodic rescan.
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// An entry of the shared folder that is not shared: it could not be indexed, or a rule left it
/// out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    /// Path relative to the shared folder (lossy if the name is not UTF-8).
    pub path: String,
    /// Why.
    pub reason: String,
}

/// A connected peer, as listed by `iwant status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's id.
    pub peer_id: String,
    /// The remote address of each open connection.
    pub addrs: Vec<String>,
    /// Number of open connections (1 once duplicates are closed).
    pub connections: usize,
    /// The identify agent, once known (`iwant/<version> (<name>)` for iwant nodes).
    pub agent: Option<String>,
    /// The name the peer announces, cleaned (null until identified, or for foreign peers).
    #[serde(default)]
    pub name: Option<String>,
    /// The last ping round-trip time in microseconds.
    pub rtt_us: Option<u64>,
}

/// What this node has served to peers since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// Piece bytes sent to peers.
    pub bytes: u64,
    /// Pieces sent to peers.
    pub pieces: u64,
    /// Who fetched what: the last 20 (peer, file) pairs, most recent first.
    #[serde(default)]
    pub recent: Vec<ServedLine>,
}

/// One peer fetching one file from this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedLine {
    /// The peer's id.
    pub peer_id: String,
    /// Its name (or `…` and the end of its id).
    pub name: String,
    /// The file's name.
    pub file: String,
    /// Bytes of it sent to that peer.
    pub bytes: u64,
    /// When the last of them went out (seconds since 1970).
    pub last_unix: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(value: impl Serialize) -> Vec<String> {
        let json = serde_json::to_value(value).unwrap();
        let mut keys: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The objects keep the fields `docs/control.md` lists.
    #[test]
    fn the_objects_have_the_documented_fields() {
        let download = Download {
            id: Id::of(b"x"),
            name: "x".into(),
            kind: Kind::File,
            state: DownloadState::Waiting,
            message: None,
            bytes_total: 1,
            bytes_done: 0,
            files_total: 1,
            files_done: 0,
            peers: 0,
            from: vec![],
            rate: 0,
            eta_ms: None,
            path: None,
            bytes_fetched: 0,
            bytes_local: 0,
            bytes_resumed: 0,
            elapsed_ms: 0,
            write_error: Some("disk full".into()),
        };
        assert_eq!(
            keys(&download),
            [
                "bytes_done",
                "bytes_fetched",
                "bytes_local",
                "bytes_resumed",
                "bytes_total",
                "elapsed_ms",
                "eta_ms",
                "files_done",
                "files_total",
                "from",
                "id",
                "kind",
                "message",
                "name",
                "path",
                "peers",
                "rate",
                "state",
                "write_error"
            ]
        );
        let json = serde_json::to_value(&download).unwrap();
        assert_eq!(json["state"], "waiting");
        assert_eq!(json["id"], Id::of(b"x").to_string());
        assert_eq!(
            keys(IndexInfo::default()),
            [
                "bytes",
                "dirs",
                "errors",
                "files",
                "hashed_bytes",
                "hashed_files",
                "hashing",
                "ready",
                "root_missing",
                "skipped",
                "version",
                "watch"
            ]
        );
        assert_eq!(
            keys(ServedLine::default()),
            ["bytes", "file", "last_unix", "name", "peer_id"]
        );
        assert_eq!(
            serde_json::to_string(&Watch::Partial { unwatched: 2 }).unwrap(),
            r#"{"state":"partial","unwatched":2}"#
        );
        assert_eq!(
            keys(Served::default()),
            ["bytes", "pieces", "recent"],
            "served counts"
        );
        // A reply from a daemon before `write_error` still reads.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("write_error");
        let read: Download = serde_json::from_value(old).unwrap();
        assert_eq!(read.write_error, None);
    }
}
