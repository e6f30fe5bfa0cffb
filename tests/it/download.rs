//! Downloads on loopback: nodes in this process (mDNS off, explicit peers), driven through the
//! control channel exactly as `iwant get` drives them; and a hostile holder, written here with
//! bare libp2p, that serves a manifest with escaping paths and corrupt pieces.

use std::{
    fs,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::{AsyncWriteExt, StreamExt};
use iwant::{
    config::Home,
    control::{
        Client, ClientError, Download as Progress, DownloadState, ErrorKind, Request, Response,
    },
    share::{manifest, pieces::FileHash, pieces::Layout},
};
use iwant_behaviours::{
    chunk, content,
    index_sync::{self, Entry, SnapshotPage},
    libp2p_stream,
    wire::{Bytes, Id, Kind},
};
use libp2p::{request_response, swarm::SwarmEvent, Multiaddr, PeerId};

use crate::util::{start_in_process, wait_for_async, LocalNode as Node};

/// Generous limits for a loaded 2-core machine; speed is measured by the benchmarks.
const LIMIT: Duration = Duration::from_secs(30);

impl Node {
    async fn get(&self, id: &str) -> Result<Progress, ClientError> {
        self.get_with(id, None, false).await
    }

    /// `get` with a name and `again`.
    async fn get_with(
        &self,
        id: &str,
        name: Option<&str>,
        again: bool,
    ) -> Result<Progress, ClientError> {
        let request = Request::Get {
            id: id.into(),
            name: name.map(str::to_owned),
            to: None,
            again,
        };
        match self.client().request(request).await? {
            Response::Download(p) => Ok(p),
            other => panic!("get answered {other:?}"),
        }
    }

    async fn progress(&self, id: impl Into<Id>) -> Option<Progress> {
        let id: Id = id.into();
        let request = Request::Downloads {
            id: Some(id.to_hex().to_string()),
        };
        match self.client().request(request).await {
            Ok(Response::Download(p)) => Some(p),
            _ => None,
        }
    }

    /// Gets `id` (waiting for the leader to know it) and waits until the download has ended.
    async fn fetch(&self, id: impl Into<Id>) -> Progress {
        let id: Id = id.into();
        let hex = id.to_hex();
        wait_for_async(LIMIT, "the leader to know the id", || async {
            self.get(&hex).await.ok()
        })
        .await;
        wait_for_async(LIMIT, "the download to end", || async {
            self.progress(id).await.filter(|p| p.state.is_final())
        })
        .await
    }

    /// Waits until this node's index holds `id`.
    async fn wait_indexed(&self, id: impl Into<Id>) {
        let id: Id = id.into();
        wait_for_async(LIMIT, "the file to be indexed", || async {
            let entries = self.node.index.entries().await.ok()?;
            entries.iter().any(|e| e.id == id).then_some(())
        })
        .await;
    }

    fn partial_files(&self) -> Vec<String> {
        fs::read_dir(&self.downloads)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".iwant-part"))
            .collect()
    }
}

/// Two connected nodes with one leader.
async fn two_nodes() -> (Node, Node) {
    let a = Node::start(vec![]).await;
    let b = Node::start(vec![a.addr().await]).await;
    wait_for_async(LIMIT, "one leader for both nodes", || async {
        let la = a.node.net.leader_watch().borrow().leader?;
        (b.node.net.leader_watch().borrow().leader == Some(la)).then_some(())
    })
    .await;
    (a, b)
}

fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interesting_sizes_arrive_intact() {
    let (a, b) = two_nodes().await;
    let piece = 262_144;
    let sizes = [
        0usize,
        1,
        1023,
        1024,
        1025,
        piece - 1,
        piece,
        piece + 1,
        3 * piece + 5,
    ];
    let mut ids = Vec::new();
    for (i, len) in sizes.iter().enumerate() {
        let bytes = data(*len, i as u32 + 1);
        a.write(&format!("sizes/f{len}.bin"), &bytes);
        ids.push((blake3::hash(&bytes), *len));
    }
    for (id, _) in &ids {
        a.wait_indexed(id).await;
    }
    for (id, len) in ids {
        let p = b.fetch(&id).await;
        assert_eq!(p.state, DownloadState::Done, "size {len}: {p:?}");
        let path = p.path.expect("a done download has a path");
        let got = fs::read(&path).unwrap();
        assert_eq!(got.len(), len);
        assert_eq!(blake3::hash(&got), id, "size {len}");
        assert_eq!(path.file_name().unwrap(), format!("f{len}.bin").as_str());
    }
    assert!(b.partial_files().is_empty(), "{:?}", b.partial_files());
    b.node.stop().await;
    a.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_arrives_with_empty_dirs_and_duplicates_fetched_once_and_never_overwrites() {
    let (a, b) = two_nodes().await;
    let big = data(600_000, 7);
    a.write("album/disc 1/naïve café.flac", &big);
    a.write("album/disc 2/copy.flac", &big);
    for i in 0..40 {
        a.write(
            &format!("album/notes/n{i}.txt"),
            &data(100 + i, i as u32 + 100),
        );
    }
    fs::create_dir_all(a.share.join("album/empty/deeper")).unwrap();
    let dir_id = wait_for_async(LIMIT, "the directory to be indexed", || async {
        let entries = a.node.index.entries().await.ok()?;
        let album = entries.iter().find(|e| e.path == "album")?;
        // Ready once every file is in.
        (entries
            .iter()
            .filter(|e| e.path.starts_with("album/notes/"))
            .count()
            == 40
            && entries.iter().any(|e| e.path == "album/empty/deeper"))
        .then_some(album.id)
    })
    .await;
    // The index of the dir is final once its id stops changing: fetch by id, then compare.
    let p = b.fetch(&dir_id).await;
    assert_eq!(p.state, DownloadState::Done, "{p:?}");
    let path = p.path.clone().unwrap();
    assert_eq!(path, b.downloads.join("album"));
    assert_same_tree(&a.share.join("album"), &path);
    assert!(path.join("empty/deeper").is_dir());
    // Identical contents counted (and fetched) once.
    assert_eq!(p.files_total, 41, "{p:?}");
    assert_eq!(
        p.bytes_total,
        600_000 + (0..40).map(|i| 100 + i as u64).sum::<u64>()
    );

    // Again: the existing folder is kept, the new one gets a suffix.
    let hex = dir_id.to_hex();
    wait_for_async(LIMIT, "the second download to start", || async {
        b.get_with(&hex, None, true).await.ok()
    })
    .await;
    let again = wait_for_async(LIMIT, "the second download to end", || async {
        b.progress(dir_id)
            .await
            .filter(|p| p.state.is_final() && p.path.is_some())
    })
    .await;
    assert_eq!(again.path.unwrap(), b.downloads.join("album (1)"));
    assert_same_tree(&a.share.join("album"), &b.downloads.join("album"));
    b.node.stop().await;
    a.node.stop().await;
}

fn assert_same_tree(expected: &Path, actual: &Path) {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Option<Vec<u8>>)>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                out.push((rel, None));
                walk(root, &path, out);
            } else {
                out.push((rel, Some(fs::read(&path).unwrap())));
            }
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    walk(expected, expected, &mut a);
    walk(actual, actual, &mut b);
    assert_eq!(a.len(), b.len(), "entry counts differ");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "trees differ at {}", x.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_this_node_shares_is_copied_not_fetched() {
    let (a, b) = two_nodes().await;
    let bytes = data(700_000, 9);
    let id = blake3::hash(&bytes);
    a.write("both.bin", &bytes);
    b.write("mine.bin", &bytes);
    b.wait_indexed(&id).await;
    a.wait_indexed(&id).await;
    // b has it: a get says where, and fetches nothing.
    let request = Request::Get {
        id: id.to_hex().to_string(),
        name: None,
        to: None,
        again: false,
    };
    match b.client().request(request).await.unwrap() {
        Response::AlreadyHave { id: got, path } => {
            assert_eq!(got, id);
            assert_eq!(path, b.share.canonicalize().unwrap().join("mine.bin"));
        }
        other => panic!("{other:?}"),
    }
    assert!(b.progress(id).await.is_none(), "no download started");
    // With `again`, and a name of the user's choice: copied from the share, not fetched.
    let hex = id.to_hex();
    wait_for_async(LIMIT, "the download to start", || async {
        b.get_with(&hex, Some("copy of mine.bin"), true).await.ok()
    })
    .await;
    let p = wait_for_async(LIMIT, "the download to end", || async {
        b.progress(id).await.filter(|p| p.state.is_final())
    })
    .await;
    assert_eq!(p.state, DownloadState::Done, "{p:?}");
    assert_eq!(p.name, "copy of mine.bin");
    assert_eq!(
        p.path.as_deref().unwrap().file_name().unwrap(),
        "copy of mine.bin"
    );
    assert_eq!(p.bytes_local, 700_000, "{p:?}");
    assert_eq!(p.bytes_fetched, 0, "{p:?}");
    assert_eq!(blake3::hash(&fs::read(p.path.unwrap()).unwrap()), id);
    b.node.stop().await;
    a.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_unknown_ids_and_unknown_downloads_get_clear_errors() {
    let (a, b) = two_nodes().await;
    a.write("x.txt", b"x");
    a.wait_indexed(&blake3::hash(b"x")).await;
    for bad in ["", "abc", "xyz1", &"a".repeat(65)] {
        let err = b.get(bad).await.unwrap_err();
        match err {
            ClientError::Remote(e) => {
                assert_eq!(e.kind, ErrorKind::BadRequest, "{bad:?}: {e:?}");
                assert!(e.message.contains("not an id"), "{}", e.message);
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // Nobody shares this one.
    let unknown = blake3::hash(b"nobody has this").to_hex().to_string();
    match b.get(&unknown).await.unwrap_err() {
        ClientError::Remote(e) => {
            assert_eq!(e.kind, ErrorKind::NotFound, "{e:?}");
            assert!(e.message.contains("no node shares"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    match b
        .client()
        .request(Request::Cancel {
            id: unknown.clone(),
        })
        .await
        .unwrap_err()
    {
        ClientError::Remote(e) => assert_eq!(e.kind, ErrorKind::NotFound, "{e:?}"),
        other => panic!("{other:?}"),
    }
    // A download that ended: `cancel` says so (status lists it), and clearing forgets it.
    let x = blake3::hash(b"x");
    let done = b.fetch(x).await;
    assert_eq!(done.state, DownloadState::Done, "{done:?}");
    match b
        .client()
        .request(Request::Cancel {
            id: x.to_hex()[..8].to_string(),
        })
        .await
        .unwrap_err()
    {
        ClientError::Remote(e) => {
            assert_eq!(e.kind, ErrorKind::NotFound, "{e:?}");
            assert!(
                e.message.contains("has ended already (done: "),
                "{}",
                e.message
            );
            assert!(e.message.contains("iwant status --clear"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    match b.client().request(Request::ClearDownloads).await.unwrap() {
        Response::Cleared { cleared } => assert_eq!(cleared, 1),
        other => panic!("{other:?}"),
    }
    assert!(
        b.progress(x).await.is_none(),
        "a cleared download is forgotten"
    );
    b.node.stop().await;
    a.node.stop().await;
}

/// A peer that claims content and serves it wrong, written with bare libp2p.
mod hostile {
    use super::*;

    #[derive(libp2p::swarm::NetworkBehaviour)]
    #[behaviour(prelude = "libp2p::swarm::derive_prelude")]
    pub struct Behaviour {
        pub index: index_sync::Behaviour,
        pub content: content::Behaviour,
        pub stream: libp2p_stream::Behaviour,
    }

    /// What the hostile peer serves.
    pub struct Script {
        /// A file id, its true piece list and size: served with garbage pieces.
        pub file: (Id, u64, Vec<u8>),
        /// A directory id and its (escaping) manifest.
        pub dir: (Id, Vec<u8>),
        /// Chunk requests answered.
        pub requests: Arc<AtomicU64>,
    }

    /// Connects to every node in `addrs`, pushes `entries` as its index to `leader`, then
    /// serves `script` until the test ends (the task is dropped with the runtime).
    pub async fn spawn(addrs: Vec<Multiaddr>, leader: PeerId, entries: Vec<Entry>, script: Script) {
        let mut swarm = crate::util::bare_swarm(Behaviour {
            index: index_sync::behaviour(),
            content: content::behaviour(),
            stream: libp2p_stream::Behaviour::new(),
        });
        let mut incoming = swarm
            .behaviour()
            .stream
            .new_control()
            .accept(chunk::PROTOCOL)
            .unwrap();
        let n = addrs.len();
        for addr in addrs {
            swarm.dial(addr).unwrap();
        }
        let mut connected = 0;
        while connected < n {
            if let SwarmEvent::ConnectionEstablished { .. } = swarm.select_next_some().await {
                connected += 1;
            }
        }
        let request = index_sync::Request::Snapshot(SnapshotPage {
            collection: Default::default(),
            session: 1,
            page: 0,
            last: true,
            version: 1,
            entries,
        });
        swarm.behaviour_mut().index.send_request(&leader, request);
        let (file_id, file_size, _) = script.file.clone();
        let requests = script.requests.clone();
        tokio::spawn(async move {
            while let Some((_, mut stream)) = incoming.next().await {
                let requests = requests.clone();
                tokio::spawn(async move {
                    let layout = Layout::for_len(file_size);
                    while let Ok(Some(req)) = chunk::read_request(&mut stream).await {
                        requests.fetch_add(1, Ordering::Relaxed);
                        if req.id != file_id {
                            let _ =
                                chunk::write_error(&mut stream, chunk::Status::NotFound, req.first)
                                    .await;
                            continue;
                        }
                        for piece in req.first..req.first + req.count {
                            let r = layout.piece_range(piece as u64).unwrap();
                            let junk = vec![0xEE; (r.end - r.start) as usize];
                            if chunk::write_piece(&mut stream, piece, &junk).await.is_err() {
                                return;
                            }
                        }
                        let _ = stream.flush().await;
                    }
                });
            }
        });
        tokio::spawn(async move {
            loop {
                if let SwarmEvent::Behaviour(BehaviourEvent::Content(
                    request_response::Event::Message {
                        message:
                            request_response::Message::Request {
                                request, channel, ..
                            },
                        ..
                    },
                )) = swarm.select_next_some().await
                {
                    let response = match request {
                        content::Request::Pieces { id } if id == script.file.0 => {
                            content::Response::Pieces {
                                size: script.file.1,
                                piece_size: Layout::for_len(script.file.1).piece_size(),
                                pieces: Bytes(script.file.2.clone()),
                            }
                        }
                        content::Request::Manifest { id, .. } if id == script.dir.0 => {
                            content::Response::Manifest {
                                total: script.dir.1.len() as u64,
                                offset: 0,
                                bytes: Bytes(script.dir.1.clone()),
                            }
                        }
                        _ => content::Response::NotFound,
                    };
                    let _ = swarm
                        .behaviour_mut()
                        .content
                        .send_response(channel, response);
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_holder_can_neither_write_outside_the_download_folder_nor_corrupt_a_file() {
    let (a, b) = two_nodes().await;
    // The honest copy on a.
    let bytes = data(6 * 262_144 + 99, 11);
    let hash = FileHash::of_bytes(Layout::for_len(bytes.len() as u64), &bytes);
    a.write("honest.bin", &bytes);
    a.wait_indexed(&hash.id).await;
    // The hostile peer's directory: a manifest whose paths escape, hashed to its "id".
    let mut raw = manifest::MAGIC.to_vec();
    let path = "../escaped.txt";
    raw.extend_from_slice(&(path.len() as u32).to_le_bytes());
    raw.extend_from_slice(path.as_bytes());
    raw.push(0); // a file
    raw.extend_from_slice(&1u64.to_le_bytes());
    raw.extend_from_slice(blake3::hash(b"x").as_bytes());
    let dir_id = manifest::id_of(&raw);
    let leader = a.node.net.leader_watch().borrow().leader.unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    hostile::spawn(
        vec![a.addr().await, b.addr().await],
        leader,
        vec![
            Entry {
                path: "evil".into(),
                kind: Kind::Dir,
                size: 1,
                id: Id(*dir_id.as_bytes()),
            },
            Entry {
                path: "honest.bin".into(),
                kind: Kind::File,
                size: bytes.len() as u64,
                id: Id(*hash.id.as_bytes()),
            },
        ],
        hostile::Script {
            file: (
                Id(*hash.id.as_bytes()),
                bytes.len() as u64,
                hash.pieces_bytes(),
            ),
            dir: (Id(*dir_id.as_bytes()), raw),
            requests: requests.clone(),
        },
    )
    .await;

    // The corrupt holder is used, caught, and the file still arrives intact from `a`.
    let hex = hash.id.to_hex().to_string();
    wait_for_async(LIMIT, "the leader to list two holders", || async {
        let p = b.get(&hex).await.ok()?;
        Some(p)
    })
    .await;
    let p = wait_for_async(LIMIT, "the download to end", || async {
        b.progress(&hash.id).await.filter(|p| p.state.is_final())
    })
    .await;
    assert_eq!(p.state, DownloadState::Done, "{p:?}");
    assert_eq!(blake3::hash(&fs::read(p.path.unwrap()).unwrap()), hash.id);

    // The escaping manifest is refused before anything is written, and the download ends:
    // the manifest hashes to the id, so no other holder could serve a better one.
    let dir_hex = dir_id.to_hex().to_string();
    wait_for_async(LIMIT, "the leader to know the directory", || async {
        b.get(&dir_hex).await.ok()
    })
    .await;
    let failed = wait_for_async(LIMIT, "the directory download to end", || async {
        b.progress(&dir_id).await.filter(|p| p.state.is_final())
    })
    .await;
    assert_eq!(failed.state, DownloadState::Failed, "{failed:?}");
    let message = failed.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("unusable") && message.contains("escaped.txt"),
        "{failed:?}"
    );
    let parent = b.downloads.parent().unwrap();
    assert!(!parent.join("escaped.txt").exists());
    assert!(!b.downloads.join("escaped.txt").exists());
    assert!(b.partial_files().is_empty(), "{:?}", b.partial_files());
    assert!(
        requests.load(Ordering::Relaxed) > 0,
        "the hostile holder was never asked for a piece"
    );
    b.node.stop().await;
    a.node.stop().await;
}

/// A bare libp2p client of the chunk protocol.
async fn chunk_client(
    addr: Multiaddr,
) -> (libp2p_stream::Control, PeerId, tokio::task::JoinHandle<()>) {
    let mut swarm = crate::util::bare_swarm(libp2p_stream::Behaviour::new());
    let control = swarm.behaviour().new_control();
    swarm.dial(addr).unwrap();
    let peer = loop {
        if let SwarmEvent::ConnectionEstablished { peer_id, .. } = swarm.select_next_some().await {
            break peer_id;
        }
    };
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (control, peer, driver)
}

/// Sends one request and reads its answer: the Ok pieces, then the error frame if any.
async fn ask_pieces(
    stream: &mut libp2p::Stream,
    id: blake3::Hash,
    first: u32,
    count: u32,
) -> (Vec<Vec<u8>>, Option<chunk::Status>) {
    let request = chunk::Request {
        id: Id(*id.as_bytes()),
        first,
        count,
    };
    chunk::write_request(stream, &request).await.unwrap();
    stream.flush().await.unwrap();
    let mut pieces = Vec::new();
    for _ in 0..count {
        let header = chunk::read_header(stream).await.unwrap();
        if header.status != chunk::Status::Ok {
            return (pieces, Some(header.status));
        }
        let mut data = Vec::new();
        chunk::read_piece(stream, &header, header.len, &mut data)
            .await
            .unwrap();
        pieces.push(data);
    }
    (pieces, None)
}

/// One one-piece request; the answer's status, or `None` if the stream failed.
async fn try_ask(stream: &mut libp2p::Stream, id: blake3::Hash) -> Option<chunk::Status> {
    let request = chunk::Request {
        id: Id(*id.as_bytes()),
        first: 0,
        count: 1,
    };
    chunk::write_request(stream, &request).await.ok()?;
    stream.flush().await.ok()?;
    let header = chunk::read_header(stream).await.ok()?;
    if header.status == chunk::Status::Ok {
        let mut data = Vec::new();
        chunk::read_piece(stream, &header, header.len, &mut data)
            .await
            .ok()?;
    }
    Some(header.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_only_what_it_shares_now_and_bounds_streams() {
    let a = Node::start(vec![]).await;
    let bytes = data(2 * 262_144 + 10, 21);
    let id = blake3::hash(&bytes);
    a.write("served.bin", &bytes);
    a.wait_indexed(&id).await;
    let (control, peer, driver) = chunk_client(a.addr().await).await;
    let mut stream = control
        .clone()
        .open_stream(peer, chunk::PROTOCOL)
        .await
        .unwrap();

    // The shared file, piece by piece; a range past its end stops with OutOfRange.
    let (pieces, end) = ask_pieces(&mut stream, id, 0, 4).await;
    assert_eq!(end, Some(chunk::Status::OutOfRange));
    assert_eq!(pieces.concat(), bytes);
    // An id nobody shares here.
    let (pieces, end) = ask_pieces(&mut stream, blake3::hash(b"other"), 0, 1).await;
    assert!(pieces.is_empty());
    assert_eq!(end, Some(chunk::Status::NotFound));

    // Changed on disk since it was hashed (other size): not served as the old id.
    let path = a.share.join("served.bin");
    let mut changed = bytes.clone();
    changed.push(1);
    fs::write(&path, &changed).unwrap();
    let (pieces, end) = ask_pieces(&mut stream, id, 0, 1).await;
    assert!(pieces.is_empty());
    assert!(
        matches!(
            end,
            Some(chunk::Status::NotFound | chunk::Status::Unavailable)
        ),
        "{end:?}"
    );
    // ... and the indexer is told: the new content gets indexed without waiting for a rescan.
    a.wait_indexed(&blake3::hash(&changed)).await;

    // A file outside the shared folder is never served, even after it was shared once.
    let moved = a.dir.path().join("elsewhere");
    fs::create_dir_all(&moved).unwrap();
    let other_share = moved.canonicalize().unwrap();
    match a
        .client()
        .request(Request::SetShared {
            path: other_share.clone(),
            force: false,
            create: false,
        })
        .await
        .unwrap()
    {
        Response::Folders(f) => assert_eq!(f.shared_dir, other_share),
        other => panic!("{other:?}"),
    }
    let new_id = blake3::hash(&changed);
    wait_for_async(LIMIT, "the old share to stop being served", || async {
        let mut s = control
            .clone()
            .open_stream(peer, chunk::PROTOCOL)
            .await
            .ok()?;
        let (_, end) = ask_pieces(&mut s, new_id, 0, 1).await;
        (end == Some(chunk::Status::NotFound)).then_some(())
    })
    .await;

    // At most 8 streams per peer: with 8 working ones open, a 9th is closed unanswered.
    drop(stream);
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut open = Vec::new();
    while open.len() < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "could not open 8 working streams"
        );
        let mut s = control
            .clone()
            .open_stream(peer, chunk::PROTOCOL)
            .await
            .unwrap();
        if try_ask(&mut s, new_id).await.is_some() {
            open.push(s);
        } else {
            // A stream of an earlier step still counted; the server notices its end soon.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut ninth = control
        .clone()
        .open_stream(peer, chunk::PROTOCOL)
        .await
        .unwrap();
    assert_eq!(
        try_ask(&mut ninth, new_id).await,
        None,
        "a 9th stream was served"
    );
    for s in &mut open {
        assert_eq!(try_ask(s, new_id).await, Some(chunk::Status::NotFound));
    }
    driver.abort();
    a.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_prefix_lists_the_candidates_and_downloads_nothing() {
    let (a, b) = two_nodes().await;
    // Two contents whose ids share their first 4 hex digits (found by trying).
    let mut seen = std::collections::HashMap::new();
    let (x, y) = (0u32..)
        .find_map(|i| {
            let content = format!("candidate {i}");
            let prefix = blake3::hash(content.as_bytes()).to_hex()[..4].to_string();
            seen.insert(prefix.clone(), content.clone())
                .map(|other| (other, content))
        })
        .unwrap();
    a.write("x.txt", x.as_bytes());
    a.write("y.txt", y.as_bytes());
    let (ix, iy) = (blake3::hash(x.as_bytes()), blake3::hash(y.as_bytes()));
    a.wait_indexed(&ix).await;
    a.wait_indexed(&iy).await;
    let prefix = ix.to_hex()[..4].to_string();
    // Wait with searches, which change nothing: a `get` asked while the leader knew only one
    // of the two would rightly download it.
    for name in ["x.txt", "y.txt"] {
        wait_for_async(LIMIT, "the leader to know both files", || async {
            let found = b.search_paths(name).await?;
            found.iter().any(|p| p == name).then_some(())
        })
        .await;
    }
    let err = match b.get(&prefix).await {
        Err(ClientError::Remote(e)) if e.kind == ErrorKind::Ambiguous => e,
        other => panic!("an ambiguous prefix: {other:?}"),
    };
    assert!(
        err.message.contains(ix.to_hex().as_str()),
        "{}",
        err.message
    );
    assert!(
        err.message.contains(iy.to_hex().as_str()),
        "{}",
        err.message
    );
    assert!(err.message.contains("x.txt") && err.message.contains("y.txt"));
    assert!(fs::read_dir(&b.downloads).unwrap().next().is_none());
    b.node.stop().await;
    a.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_download_damaged_by_a_crash_is_fetched_again_at_the_next_start() {
    let (a, b) = two_nodes().await;
    let bytes = data(3 * 262_144 + 1, 31);
    let hash = FileHash::of_bytes(Layout::for_len(bytes.len() as u64), &bytes);
    a.write("precious.bin", &bytes);
    a.wait_indexed(&hash.id).await;
    let a_addr = a.addr().await;
    let (b_home, b_downloads) = (b.home.clone(), b.downloads.clone());
    b.node.stop().await;
    // What a crash right after the move into place, before the data reached the disk, leaves:
    // the row with `placed` set, and a placed file whose tail never made it.
    let placed = b_downloads.join("precious.bin");
    fs::write(&placed, &bytes[..bytes.len() / 2]).unwrap();
    let store = iwant::store::Store::open(&Home::resolve(Some(b_home.clone())).unwrap().database())
        .unwrap();
    store
        .put_download(&iwant::store::DownloadRow {
            id: hash.id.into(),
            kind: iwant::share::Kind::File,
            name: "precious.bin".into(),
            size: bytes.len() as u64,
            dest: b_downloads.to_string_lossy().into_owned(),
            part: b_downloads
                .join(format!(
                    ".precious.bin.{}.iwant-part",
                    &hash.id.to_hex()[..12]
                ))
                .to_string_lossy()
                .into_owned(),
            meta: hash.pieces_bytes(),
            done: vec![0xff],
            started_ms: 1,
            placed: Some(placed.to_string_lossy().into_owned()),
            attrs: None,
        })
        .unwrap();
    drop(store);
    let b = start_in_process(
        &b_home,
        "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        vec![a_addr],
    )
    .await;
    let client = Client::new(Home::resolve(Some(b_home.clone())).unwrap());
    let p = wait_for_async(LIMIT, "the resumed download to end", || async {
        let request = Request::Downloads {
            id: Some(hash.id.to_hex().to_string()),
        };
        match client.request(request).await {
            Ok(Response::Download(p)) if p.state.is_final() => Some(p),
            _ => None,
        }
    })
    .await;
    assert_eq!(p.state, DownloadState::Done, "{p:?}");
    assert_eq!(p.path.as_deref(), Some(placed.as_path()));
    assert_eq!(blake3::hash(&fs::read(&placed).unwrap()), hash.id);
    assert_eq!(p.bytes_fetched, bytes.len() as u64, "{p:?}");
    b.stop().await;
    a.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_names_other_platforms_cannot_store_arrives_whole() {
    let (a, b) = two_nodes().await;
    let names = [
        "Song: Title.txt",
        "what?.txt",
        "CON",
        "aux.c",
        "trailing.",
        "back\\slash",
        "tab\tname",
        "sub: dir/LPT9.log",
    ];
    for (i, name) in names.iter().enumerate() {
        a.write(&format!("odd/{name}"), &data(50 + i, i as u32 + 1));
    }
    let dir_id = wait_for_async(LIMIT, "the directory to be indexed", || async {
        let entries = a.node.index.entries().await.ok()?;
        let odd = entries.iter().find(|e| e.path == "odd")?;
        let files = entries
            .iter()
            .filter(|e| e.path.starts_with("odd/") && e.kind == manifest::Kind::File)
            .count();
        (files == names.len()).then_some(odd.id)
    })
    .await;
    let p = b.fetch(&dir_id).await;
    assert_eq!(p.state, DownloadState::Done, "{p:?}");
    let path = p.path.clone().unwrap();
    // On Linux every one of these names is stored as it is.
    assert_same_tree(&a.share.join("odd"), &path);
    b.node.stop().await;
    a.node.stop().await;
}

#[cfg(unix)]
fn set_mtime(path: &Path, mtime: std::time::SystemTime) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(mtime).unwrap();
}

/// A shared file swapped for a symlink to a file outside the share with the same size and
/// modification time, or for a FIFO: never served, not even under the old id before the
/// indexer notices, and not while a symlink is renamed over it again and again.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_swapped_for_a_symlink_or_a_fifo_never_serves_what_is_outside() {
    let a = Node::start(vec![]).await;
    let bytes = data(2 * 262_144 + 10, 31);
    let id = blake3::hash(&bytes);
    let other = data(1000, 32);
    a.write("served.bin", &bytes);
    a.write("other.bin", &other);
    a.wait_indexed(&id).await;
    a.wait_indexed(&blake3::hash(&other)).await;
    let path = a.share.join("served.bin");
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    // Outside the share: same size, same modification time, other bytes.
    let outside = a.dir.path().join("outside.bin");
    let secret = data(bytes.len(), 99);
    fs::write(&outside, &secret).unwrap();
    set_mtime(&outside, mtime);
    let original = a.dir.path().join("original.bin");
    fs::copy(&path, &original).unwrap();
    let swap_in_link = {
        let (outside, path) = (outside.clone(), path.clone());
        move |n: u32| {
            let link = path.with_file_name(format!(".link-{n}"));
            std::os::unix::fs::symlink(&outside, &link).unwrap();
            fs::rename(&link, &path).unwrap();
        }
    };
    let piece = |i: usize| &bytes[i * 262_144..((i + 1) * 262_144).min(bytes.len())];
    let (control, peer, driver) = chunk_client(a.addr().await).await;
    let mut stream = control
        .clone()
        .open_stream(peer, chunk::PROTOCOL)
        .await
        .unwrap();

    // Swapped once: refused at once, before the indexer has had time to look.
    swap_in_link(0);
    let (pieces, end) = ask_pieces(&mut stream, id, 0, 3).await;
    assert!(pieces.is_empty(), "served through the symlink");
    assert!(
        matches!(
            end,
            Some(chunk::Status::NotFound | chunk::Status::Unavailable)
        ),
        "{end:?}"
    );

    // A fresh symlink renamed over it every 100 ms, the original put back in between, while
    // the client asks for the file again and again: only the original's bytes ever arrive.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, path, original) = (stop.clone(), path.clone(), original.clone());
        std::thread::spawn(move || {
            let mut n = 1;
            while !stop.load(Ordering::Relaxed) {
                swap_in_link(n);
                std::thread::sleep(Duration::from_millis(50));
                let copy = path.with_file_name(format!(".copy-{n}"));
                fs::copy(&original, &copy).unwrap();
                set_mtime(&copy, mtime);
                fs::rename(&copy, &path).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                n += 1;
            }
        })
    };
    let (mut asked, mut served) = (0, 0);
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let (pieces, _) = ask_pieces(&mut stream, id, 0, 3).await;
        asked += 1;
        for (i, p) in pieces.iter().enumerate() {
            assert_ne!(
                p.as_slice(),
                &secret[i * 262_144..][..p.len()],
                "outside bytes served"
            );
            assert_eq!(p.as_slice(), piece(i), "only the original's bytes");
            served += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(asked >= 10, "only {asked} requests in 3 s");
    eprintln!("{asked} requests while swapping, {served} pieces of the original served");

    // A FIFO in its place: answered at once (no open that waits for a writer), and the node
    // goes on serving the rest.
    fs::remove_file(&path).unwrap();
    crate::util::mkfifo(&path);
    let answer = tokio::time::timeout(LIMIT, ask_pieces(&mut stream, id, 0, 1))
        .await
        .expect("a request for a file now a FIFO hangs");
    assert!(answer.0.is_empty());
    assert!(
        matches!(
            answer.1,
            Some(chunk::Status::NotFound | chunk::Status::Unavailable)
        ),
        "{:?}",
        answer.1
    );
    let (pieces, end) = ask_pieces(&mut stream, blake3::hash(&other), 0, 1).await;
    assert_eq!((pieces.concat(), end), (other.clone(), None));
    driver.abort();
    a.node.stop().await;
}

/// Waits until `node` offers `id` from its download folder (its downloads index holds it).
async fn wait_offered(node: &Node, id: impl Into<Id>) -> String {
    let id: Id = id.into();
    let downloads = node
        .node
        .offered
        .downloads
        .clone()
        .expect("downloads are offered by default");
    wait_for_async(LIMIT, "the download to be offered", || async {
        let entries = downloads.index.entries().await.ok()?;
        entries.iter().find(|e| e.id == id).map(|e| e.path.clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_download_serves_the_next_downloader_after_the_seeder_left() {
    let a = Node::start(vec![]).await;
    let b = Node::start(vec![a.addr().await]).await;
    let c = Node::start(vec![a.addr().await, b.addr().await]).await;
    let file = data(3_000_000, 41);
    a.write("film.mkv", &file);
    a.write("game/data/level1.pak", &data(700_000, 42));
    fs::create_dir_all(a.share.join("game/saves")).unwrap();
    let file_id = blake3::hash(&file);
    a.wait_indexed(file_id).await;
    let dir_id = wait_for_async(LIMIT, "the folder to be indexed", || async {
        let entries = a.node.index.entries().await.ok()?;
        let game = entries.iter().find(|e| e.path == "game")?;
        (entries.iter().any(|e| e.path == "game/saves")
            && entries.iter().any(|e| e.path == "game/data/level1.pak"))
        .then_some(game.id)
    })
    .await;

    for id in [Id::from(file_id), dir_id] {
        let p = b.fetch(id).await;
        assert_eq!(p.state, DownloadState::Done, "{p:?}");
    }
    // B offers both, under the ids it downloaded (the folder's too: same names, same tree).
    assert_eq!(wait_offered(&b, file_id).await, "film.mkv");
    assert_eq!(wait_offered(&b, dir_id).await, "game");
    // Offered from the hashes the downloads verified: nothing was read again to hash it.
    let hashed = b
        .node
        .offered
        .downloads
        .as_ref()
        .unwrap()
        .index
        .status()
        .hashed_bytes;
    assert_eq!(hashed, 0, "the downloads were hashed again");
    // `status` says so (its counts follow the index's rows within a moment).
    wait_for_async(LIMIT, "status to count the two files offered", || async {
        match b.client().request(Request::Status).await {
            Ok(Response::Status(status)) => {
                let offered = status.offered_downloads.expect("downloads are offered");
                (offered.files == 2 && offered.bytes == 3_000_000 + 700_000).then_some(())
            }
            _ => None,
        }
    })
    .await;

    // What the user puts in the download folder, or changes there, is never offered.
    let downloads = b.node.offered.downloads.clone().unwrap();
    fs::write(b.downloads.join("mine.txt"), b"my own notes").unwrap();
    fs::write(
        b.downloads.join("game/data/extra.txt"),
        b"added by the user",
    )
    .unwrap();
    wait_for_async(LIMIT, "the user's files to be left out", || async {
        let skipped = downloads.index.skipped(100).await.ok()?;
        let out = |p: &str| skipped.iter().any(|s| s.path == p);
        (out("mine.txt") && out("game/data/extra.txt")).then_some(())
    })
    .await;
    let entries = downloads.index.entries().await.unwrap();
    assert!(
        !entries
            .iter()
            .any(|e| e.path == "mine.txt" || e.path.ends_with("extra.txt")),
        "{entries:?}"
    );

    // The seeder leaves: C gets both from B alone.
    a.node.stop().await;
    for (id, name) in [(Id::from(file_id), "film.mkv"), (dir_id, "game")] {
        let p = c.fetch(id).await;
        assert_eq!(p.state, DownloadState::Done, "{name}: {p:?}");
        assert_eq!(p.path.as_deref(), Some(c.downloads.join(name).as_path()));
    }
    assert_eq!(fs::read(c.downloads.join("film.mkv")).unwrap(), file);
    assert_eq!(
        fs::read(c.downloads.join("game/data/level1.pak")).unwrap(),
        data(700_000, 42)
    );
    assert!(c.downloads.join("game/saves").is_dir());
    assert!(!c.downloads.join("game/data/extra.txt").exists());

    // A downloaded file edited in place is no longer offered.
    fs::write(b.downloads.join("film.mkv"), b"edited").unwrap();
    wait_for_async(LIMIT, "the edited download to be withdrawn", || async {
        let entries = downloads.index.entries().await.ok()?;
        (!entries.iter().any(|e| e.path == "film.mkv")).then_some(())
    })
    .await;
    c.node.stop().await;
    b.node.stop().await;
}

impl Node {
    /// Piece bytes this node has served since it started.
    async fn served_bytes(&self) -> u64 {
        match self.client().request(Request::Status).await {
            Ok(Response::Status(status)) => status.served.bytes,
            other => panic!("status answered {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_is_fetched_from_the_holders_of_its_files_too() {
    // X shares the folder; Y and Z each share one of its files elsewhere (another name, no
    // folder): W's download of the folder takes pieces from all three.
    let x = Node::start(vec![]).await;
    let y = Node::start(vec![x.addr().await]).await;
    let z = Node::start(vec![x.addr().await, y.addr().await]).await;
    let w = Node::start(vec![x.addr().await, y.addr().await, z.addr().await]).await;
    let (one, two) = (data(6_000_000, 51), data(6_000_000, 52));
    x.write("kit/one.bin", &one);
    x.write("kit/sub/two.bin", &two);
    y.write("copies/first.bin", &one);
    z.write("second.bin", &two);
    y.wait_indexed(blake3::hash(&one)).await;
    z.wait_indexed(blake3::hash(&two)).await;
    let kit = wait_for_async(LIMIT, "the folder to be indexed", || async {
        let entries = x.node.index.entries().await.ok()?;
        let kit = entries.iter().find(|e| e.path == "kit")?;
        entries
            .iter()
            .any(|e| e.path == "kit/sub/two.bin")
            .then_some(kit.id)
    })
    .await;
    let p = w.fetch(kit).await;
    assert_eq!(p.state, DownloadState::Done, "{p:?}");
    assert_eq!(fs::read(w.downloads.join("kit/one.bin")).unwrap(), one);
    assert_eq!(fs::read(w.downloads.join("kit/sub/two.bin")).unwrap(), two);
    let (from_x, from_y, from_z) = (
        x.served_bytes().await,
        y.served_bytes().await,
        z.served_bytes().await,
    );
    println!("served: x {from_x}, y {from_y}, z {from_z}");
    assert!(
        from_y > 0 && from_z > 0,
        "x {from_x}, y {from_y}, z {from_z}"
    );
    assert!(from_x + from_y + from_z >= 12_000_000);
    for n in [w, z, y, x] {
        n.node.stop().await;
    }
}

/// Names for people: the holders of a search result and the peer that fetched a file from a
/// node are shown by the names they announce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_holds_it_and_who_fetched_it_show_by_name() {
    let (a, b) = two_nodes().await;
    let status = |n: &Node| {
        let client = n.client();
        async move {
            match client.request(Request::Status).await.unwrap() {
                Response::Status(s) => s,
                other => panic!("{other:?}"),
            }
        }
    };
    let (name_a, name_b) = (status(&a).await.name, status(&b).await.name);
    assert!(!name_a.is_empty());
    a.write("song.flac", b"la la la");
    let id = blake3::hash(b"la la la");
    a.wait_indexed(id).await;
    // b knows a by name once identified.
    let holders = wait_for_async(LIMIT, "the result to name its holder", || async {
        let reply = match b
            .client()
            .request(Request::Search {
                text: "song".into(),
                kind: None,
                limit: 5,
                offset: 0,
            })
            .await
            .ok()?
        {
            Response::SearchResults(r) => r,
            _ => return None,
        };
        let r = reply.results.into_iter().next()?;
        (!r.holder_names.is_empty() && !r.holder_names[0].starts_with('…'))
            .then_some(r.holder_names)
    })
    .await;
    assert_eq!(holders, [name_a]);
    let done = b.fetch(id).await;
    assert_eq!(done.state, DownloadState::Done, "{done:?}");
    let served = status(&a).await.served;
    assert_eq!(served.recent.len(), 1, "{served:?}");
    let line = &served.recent[0];
    assert_eq!(line.peer_id, b.node.peer_id().to_string());
    assert_eq!(
        (line.name.as_str(), line.file.as_str(), line.bytes),
        (name_b.as_str(), "song.flac", 8)
    );
    b.node.stop().await;
    a.node.stop().await;
}
