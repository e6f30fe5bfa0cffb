//! The daemon's side of the control channel: one [`Handler`] answers every [`Request`], each
//! by the room that owns it (the index by `share`, searches by `leader::ask`, folders by
//! `config`, downloads by `transfer`). Room errors become [`ControlError`]s through the `From`
//! impls at the end of this file, so a request's code is its happy path.

use std::{collections::HashSet, path::PathBuf, sync::Arc};

use futures::{
    stream::{self, BoxStream},
    StreamExt,
};
use iwant_behaviours::{content, search};
use libp2p::PeerId;
use tokio::sync::{watch, Mutex};

use super::{
    views::{
        Download, DownloadState, Hashing, IndexInfo, LeftOut, PeerInfo, Served, ServedLine, Watch,
    },
    Answer, ControlError, ErrorKind, Request, Response, SearchReply, SearchResult, StatusReply,
    FOLLOW_EVERY,
};
use crate::{
    config::{change_folder, Config, FolderChange, FolderError, Folders, Home, Places, Role},
    leader::{self, ask::AskError, LeaderHandle},
    net::{NetworkClient, PeerStatus},
    share::{self, Offered},
    store::{ScanError, StoreError},
    transfer::{self, serve::ServedCounts, GetError, Progress, Transfers},
};

/// What the handler answers from: a handle to every room.
pub struct Handler {
    /// Downloads.
    pub transfers: Transfers,
    /// What this node has served.
    pub served: Arc<transfer::serve::Served>,
    /// The network.
    pub net: NetworkClient,
    /// The leader, for searches.
    pub leader: LeaderHandle,
    /// What this node offers: its shared folder's index, and its downloads'.
    pub offered: Offered,
    /// The node's home.
    pub home: Home,
    /// The config as last saved; the lock serialises folder changes.
    pub config: Mutex<Config>,
    /// The folders in force, for the rooms that follow them.
    pub folders: watch::Sender<Folders>,
    /// What the folder rules protect.
    pub places: Places,
    /// Stops the node ([`Request::Stop`]).
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl Handler {
    /// Answers one request: [`Request::Follow`] with a stream of replies, the others with one.
    pub async fn answer(&self, request: Request) -> Answer {
        match request {
            Request::Follow { id } => match self.transfers.follow(&id) {
                Ok(progress) => Answer::Stream({
                    let net = self.net.clone();
                    follow(move |p| view(&net, p), progress)
                }),
                Err(e) => Answer::from(Err(e.into())),
            },
            request => Answer::from(self.handle(request).await),
        }
    }

    /// Answers one request that has one reply.
    pub async fn handle(&self, request: Request) -> Result<Response, ControlError> {
        Ok(match request {
            Request::Status => Response::Status(Box::new(self.status().await?)),
            Request::List { skipped: true, .. } => {
                let skipped = self
                    .offered
                    .shared
                    .skipped(super::MAX_SKIPPED_LISTED)
                    .await?;
                let total = self.offered.shared.status().skipped;
                Response::Skipped {
                    skipped: all(skipped),
                    total,
                }
            }
            Request::List { errors: false, .. } => Response::Entries {
                entries: self.offered.shared.entries().await?,
            },
            Request::List { errors: true, .. } => Response::ScanErrors {
                errors: all(self.offered.shared.errors().await?),
            },
            Request::Search {
                text,
                kind,
                limit,
                offset,
            } => Response::SearchResults(self.search(text, kind, limit, offset).await?),
            Request::Config => Response::Folders(self.folders.borrow().clone()),
            Request::SetShared {
                path,
                force,
                create,
            } => Response::Folders(
                self.set_folder(Role::Shared, path, FolderChange { force, create })
                    .await?,
            ),
            Request::SetDownload {
                path,
                force,
                create,
            } => Response::Folders(
                self.set_folder(Role::Download, path, FolderChange { force, create })
                    .await?,
            ),
            Request::Get {
                id,
                name,
                to,
                again,
            } => {
                let to = match to {
                    Some(to) => Some(self.check_download_folder(to).await?),
                    None => None,
                };
                let options = transfer::GetOptions { name, to, again };
                match self.transfers.get(&id, options).await? {
                    transfer::Got::Download(p) => Response::Download(view(&self.net, p)),
                    transfer::Got::AlreadyHave { id, path } => Response::AlreadyHave { id, path },
                }
            }
            Request::Downloads { id: None } => Response::Downloads {
                downloads: self
                    .transfers
                    .list()
                    .into_iter()
                    .map(|p| view(&self.net, p))
                    .collect(),
            },
            Request::Downloads { id: Some(id) } => {
                let found = self.transfers.find(&id).ok_or(GetError::NoDownload(id))?;
                Response::Download(view(&self.net, found))
            }
            Request::Cancel { id } => {
                Response::Download(view(&self.net, self.transfers.cancel(&id).await?))
            }
            Request::SetName { name } => {
                let clean = iwant_behaviours::clean_name(&name).ok_or_else(|| {
                    ControlError::new(
                        ErrorKind::BadRequest,
                        "a name needs at least one visible character",
                    )
                })?;
                let mut config = self.config.lock().await;
                let mut next = config.clone();
                next.name = Some(clean.clone());
                self.home.save_config(&next).map_err(internal)?;
                *config = next;
                let announced = self.net.status().await.map_err(internal)?.name;
                Response::Named {
                    name: clean,
                    announced,
                }
            }
            Request::Stop => {
                tracing::info!("stopping: asked to by `iwant stop`");
                self.shutdown.cancel();
                Response::Stopping {
                    pid: std::process::id(),
                }
            }
            Request::ClearDownloads => Response::Cleared {
                cleared: self.transfers.clear_ended() as u64,
            },
            Request::Browse { peer, path } => self.browse(&peer, path).await?,
            Request::Follow { .. } => {
                return Err(ControlError::new(
                    ErrorKind::BadRequest,
                    "follow has a stream of replies, not one",
                ))
            }
        })
    }

    /// The connected iwant node that `who` names: by its name (any case), or by its whole peer
    /// id, or by at least 4 characters from the start or the end of it.
    fn node_named(&self, who: &str) -> Result<PeerId, ControlError> {
        let who = who.trim();
        let names = self.net.names();
        let nodes = self.net.iwant_peers();
        let shown = |p: &PeerId| match names.get(p) {
            Some(name) => format!("{name} ({})", crate::net::short_peer(p)),
            None => crate::net::short_peer(p),
        };
        let by_name: Vec<PeerId> = nodes
            .iter()
            .filter(|p| {
                names
                    .get(p)
                    .is_some_and(|n| n.to_lowercase() == who.to_lowercase())
            })
            .copied()
            .collect();
        let found: Vec<PeerId> = if !by_name.is_empty() {
            by_name
        } else {
            nodes
                .iter()
                .filter(|p| {
                    let id = p.to_base58();
                    id == who
                        || (who.chars().count() >= 4 && (id.starts_with(who) || id.ends_with(who)))
                })
                .copied()
                .collect()
        };
        match found.as_slice() {
            [one] => Ok(*one),
            [] => {
                let me = self.net.local_peer_id();
                let message = if who.eq_ignore_ascii_case(&self.net.display_name(&me))
                    || me.to_base58() == who
                {
                    "that is this node: `iwant ls` lists what it shares".to_string()
                } else if nodes.is_empty() {
                    format!("no node called {who:?} is connected; no iwant node is connected at all (`iwant status` shows the peers)")
                } else {
                    let mut known: Vec<String> = nodes.iter().map(shown).collect();
                    known.sort();
                    format!(
                        "no connected node is called {who:?}; connected: {}",
                        known.join(", ")
                    )
                };
                Err(ControlError::new(ErrorKind::NotFound, message))
            }
            several => {
                let mut known: Vec<String> = several.iter().map(shown).collect();
                known.sort();
                Err(ControlError::new(
                    ErrorKind::Ambiguous,
                    format!(
                        "{who:?} could be {}; give the end of its id instead",
                        known.join(" or ")
                    ),
                ))
            }
        }
    }

    /// Answer to [`Request::Browse`]: asks the node for its listing, page by page.
    async fn browse(&self, who: &str, path: String) -> Result<Response, ControlError> {
        iwant_behaviours::wire::check_path(&path)
            .map_err(|e| ControlError::new(ErrorKind::BadRequest, e))?;
        let peer = self.node_named(who)?;
        let name = self.net.display_name(&peer);
        let mut entries: Vec<share::IndexEntry> = Vec::new();
        let mut after: Option<String> = None;
        let mut total = 0;
        let mut busy = 0;
        // Pages stop coming after a while, so the answer beats the CLI's reply timeout; the
        // total says what is left.
        let started = std::time::Instant::now();
        while entries.len() < super::MAX_BROWSED
            && (entries.is_empty() || started.elapsed() < BROWSE_TIME)
        {
            let request = content::Request::List {
                path: path.clone(),
                after: after.clone(),
            };
            let response = self.net.content(peer, request).await.map_err(|e| {
                ControlError::new(
                    ErrorKind::Unreachable,
                    format!("{name} did not answer: {e}"),
                )
            })?;
            response
                .check()
                .map_err(|e| internal(format!("{name} sent a listing iwant cannot use: {e}")))?;
            match response {
                content::Response::List {
                    total: t,
                    entries: page,
                } => {
                    total = t;
                    // Each page starts after the last path of the one before.
                    let in_order = match (&after, page.first()) {
                        (Some(last), Some(first)) => first.path.as_bytes() > last.as_bytes(),
                        _ => true,
                    };
                    if !in_order {
                        return Err(internal(format!("{name} sent a listing out of order")));
                    }
                    let Some(last) = page.last() else { break };
                    after = Some(last.path.clone());
                    entries.extend(page.into_iter().map(|e| share::IndexEntry {
                        path: e.path,
                        kind: e.kind,
                        size: e.size,
                        id: e.id,
                    }));
                    if entries.len() as u64 >= total {
                        break;
                    }
                }
                content::Response::NotFound if entries.is_empty() => {
                    let what = if path.is_empty() {
                        "nothing (its shared folder is empty or missing)".to_string()
                    } else {
                        format!("nothing at {path:?}; `iwant ls --peer {who}` lists all it shares")
                    };
                    return Err(ControlError::new(
                        ErrorKind::NotFound,
                        format!("{name} shares {what}"),
                    ));
                }
                // What was there changed under the listing: show what came.
                content::Response::NotFound => break,
                content::Response::Busy if busy < 5 => {
                    busy += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                content::Response::Busy => {
                    return Err(ControlError::new(
                        ErrorKind::Unreachable,
                        format!("{name} is too busy to list its files; try again shortly"),
                    ))
                }
                content::Response::Refused { reason } => {
                    return Err(ControlError::new(
                        ErrorKind::BadRequest,
                        format!("{name} refused: {reason}"),
                    ))
                }
                _ => {
                    return Err(internal(format!(
                        "{name} answered a listing with something else"
                    )))
                }
            }
        }
        entries.truncate(super::MAX_BROWSED);
        Ok(Response::Browsed {
            peer: peer.to_string(),
            name,
            total: total.max(entries.len() as u64),
            entries,
        })
    }

    async fn status(&self) -> Result<StatusReply, ControlError> {
        let net = self
            .net
            .status()
            .await
            .map_err(|e| ControlError::new(ErrorKind::ShuttingDown, e.to_string()))?;
        let folders = self.folders.borrow().clone();
        Ok(StatusReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            next_name: self
                .config
                .lock()
                .await
                .chosen_name()
                .filter(|saved| *saved != net.name),
            peer_id: net.peer_id,
            name: net.name,
            listen_addrs: net.listen_addrs,
            peers: all(net.peers),
            shared_dir: folders.shared_dir,
            download_dir: folders.download_dir,
            home: self.home.root().to_path_buf(),
            index: self.offered.shared.status().into(),
            leader: net.leader,
            term: net.term,
            network_key: net.network_key,
            downloads: all(self.transfers.list()),
            served: served_view(self.served.counts(), &self.net),
            offered_downloads: self
                .offered
                .downloads
                .as_ref()
                .map(|d| d.index.status().into()),
        })
    }

    async fn search(
        &self,
        text: String,
        kind: Option<share::Kind>,
        limit: u32,
        offset: u32,
    ) -> Result<SearchReply, ControlError> {
        let bad = |m: String| ControlError::new(ErrorKind::BadRequest, m);
        if text.trim().is_empty() {
            return Err(bad("nothing to search for: give one or more words".into()));
        }
        if limit == 0 {
            return Err(bad("a limit of 0 results; give at least 1".into()));
        }
        let query = search::Query {
            text: text.clone(),
            kind,
            offset,
            limit,
        };
        query.check().map_err(bad)?;
        let request = search::Request::Search(query);
        let answer =
            leader::ask::ask(&self.net, &self.leader, request, leader::ask::ASK_DEADLINE).await?;
        let local = self.net.local_peer_id().to_string();
        // What this node can check of the leader's word: holders it never met are left out (a
        // leader cannot point users at peers that are not on the LAN; one that left moments
        // ago stays, for the leader's grace period), and so is a hit without any holder left.
        // Whether a holder has the id is checked when it is fetched (docs/election.md, "A
        // leader that lies").
        let mut known: HashSet<String> =
            self.net.met_peers().iter().map(|p| p.to_string()).collect();
        known.insert(local.clone());
        let results = leader::ask::known_holders_only(answer.results.hits, &known)
            .into_iter()
            .map(|hit| SearchResult {
                name: hit.path.rsplit('/').next().unwrap_or_default().to_string(),
                local: hit.holders.contains(&local),
                holder_names: hit
                    .holders
                    .iter()
                    .filter(|h| **h != local)
                    .map(|h| match h.parse::<libp2p::PeerId>() {
                        Ok(peer) => self.net.display_name(&peer),
                        Err(_) => String::new(),
                    })
                    .collect(),
                hit,
            })
            .collect();
        Ok(SearchReply {
            query: text,
            leader: answer.leader.to_string(),
            total: answer.results.total,
            indexed: answer.results.indexed,
            nodes: answer.results.nodes,
            results,
        })
    }

    /// `to` checked as a download folder would be (against the shared folder, the node's
    /// home, system folders), canonical; it must exist.
    async fn check_download_folder(&self, to: PathBuf) -> Result<PathBuf, ControlError> {
        let current = self.config.lock().await.folders();
        let places = self.places.clone();
        let folders = tokio::task::spawn_blocking(move || {
            change_folder(
                &current,
                Role::Download,
                &to,
                FolderChange::default(),
                &places,
            )
        })
        .await
        .map_err(internal)??;
        Ok(folders.download_dir)
    }

    async fn set_folder(
        &self,
        role: Role,
        path: PathBuf,
        change: FolderChange,
    ) -> Result<Folders, ControlError> {
        let mut config = self.config.lock().await;
        let current = config.folders();
        let places = self.places.clone();
        // The rules touch the file system (resolve, create): off the async threads.
        let folders = tokio::task::spawn_blocking(move || {
            change_folder(&current, role, &path, change, &places)
        })
        .await
        .map_err(internal)??;
        let mut next = config.clone();
        next.set_folders(&folders);
        self.home.save_config(&next).map_err(internal)?;
        if role == Role::Shared {
            // Also when it is the same folder: a missing one may be back, an interrupted
            // first scan finishes.
            self.offered.shared.set_root(next.shared_dir.clone()).await;
        }
        if let (Role::Download, Some(downloads)) = (role, &self.offered.downloads) {
            downloads
                .move_to(&next.download_dir)
                .await
                .map_err(internal)?;
        }
        *config = next;
        tracing::info!(shared = %folders.shared_dir.display(), download = %folders.download_dir.display(), "folders changed");
        self.folders.send_replace(folders.clone());
        Ok(folders)
    }
}

/// A download's progress as the control channel shows it, with the names of the holders it
/// fetches from.
fn view(net: &NetworkClient, p: Progress) -> Download {
    let from = p
        .from
        .iter()
        .filter_map(|id| id.parse::<libp2p::PeerId>().ok())
        .map(|peer| net.display_name(&peer))
        .collect();
    let mut d: Download = p.into();
    d.from = from;
    d
}

/// The replies of a [`Request::Follow`]: the progress now, then at each change (at most every
/// [`FOLLOW_EVERY`], but the final one at once), ending with the first final one (or when the
/// download's task is gone); `view` makes each progress value a reply's object.
fn follow(
    view: impl Fn(Progress) -> Download + Clone + Send + Sync + 'static,
    progress: watch::Receiver<Progress>,
) -> BoxStream<'static, Response> {
    stream::unfold(Some(progress), move |state| {
        let view = view.clone();
        async move {
            let mut rx = state?;
            let now = rx.borrow_and_update().clone();
            let next = if now.state.is_final() {
                None
            } else {
                let ended = tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_EVERY) => None,
                    r = rx.wait_for(|p| p.state.is_final()) => Some(r.is_ok()),
                };
                // A closed channel (the task is gone) ends the stream after one more reply. (The
                // wait for a final state marks the values it saw as seen: compare instead.)
                let open = match ended {
                    Some(open) => open,
                    None if *rx.borrow() != now => true,
                    None => rx.changed().await.is_ok(),
                };
                open.then_some(rx)
            };
            Some((Response::Download(view(now)), next))
        }
    })
    .boxed()
}

/// How long a [`Request::Browse`] keeps asking for more pages.
const BROWSE_TIME: std::time::Duration = std::time::Duration::from_secs(8);

fn internal(e: impl std::fmt::Display) -> ControlError {
    ControlError::new(ErrorKind::Internal, e.to_string())
}

impl From<GetError> for ControlError {
    fn from(e: GetError) -> Self {
        let kind = match &e {
            GetError::BadId(_) | GetError::BadName(_) => ErrorKind::BadRequest,
            GetError::NotFound(_) | GetError::NoDownload(_) | GetError::Ended { .. } => {
                ErrorKind::NotFound
            }
            GetError::Ambiguous { .. } => ErrorKind::Ambiguous,
            GetError::Ask(ask) => return ask_kind(ask, e.to_string()),
            GetError::Store(_) => ErrorKind::Internal,
        };
        ControlError::new(kind, e.to_string())
    }
}

impl From<AskError> for ControlError {
    fn from(e: AskError) -> Self {
        ask_kind(&e, e.to_string())
    }
}

fn ask_kind(e: &AskError, message: String) -> ControlError {
    let kind = match e {
        AskError::NoLeader { .. } => ErrorKind::NoLeader,
        AskError::Refused(_) => ErrorKind::BadRequest,
        AskError::Stopped => ErrorKind::ShuttingDown,
    };
    ControlError::new(kind, message)
}

impl From<FolderError> for ControlError {
    fn from(e: FolderError) -> Self {
        ControlError::new(ErrorKind::InvalidFolders, e.to_string())
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        internal(e)
    }
}

// ---------------------------------------------------------------------------------------------
// The rooms' values as the control channel shows them (`views.rs`).

fn all<T: Into<U>, U>(values: Vec<T>) -> Vec<U> {
    values.into_iter().map(Into::into).collect()
}

impl From<Progress> for Download {
    fn from(p: Progress) -> Self {
        let eta_ms = (p.state == transfer::DownloadState::Fetching && p.rate > 0).then(|| {
            (p.bytes_total.saturating_sub(p.bytes_done) as u128 * 1000 / p.rate as u128) as u64
        });
        Self {
            eta_ms,
            id: p.id,
            name: p.name,
            kind: p.kind,
            state: p.state.into(),
            message: p.message,
            bytes_total: p.bytes_total,
            bytes_done: p.bytes_done,
            files_total: p.files_total,
            files_done: p.files_done,
            peers: p.peers,
            rate: p.rate,
            from: Vec::new(),
            path: p.path,
            bytes_fetched: p.bytes_fetched,
            bytes_local: p.bytes_local,
            bytes_resumed: p.bytes_resumed,
            elapsed_ms: p.elapsed_ms,
            write_error: p.write_error,
        }
    }
}

impl From<transfer::DownloadState> for DownloadState {
    fn from(s: transfer::DownloadState) -> Self {
        use transfer::DownloadState as S;
        match s {
            S::Starting => Self::Starting,
            S::Fetching => Self::Fetching,
            S::Waiting => Self::Waiting,
            S::Verifying => Self::Verifying,
            S::Done => Self::Done,
            S::Failed => Self::Failed,
            S::Cancelled => Self::Cancelled,
        }
    }
}

impl From<share::IndexStatus> for IndexInfo {
    fn from(s: share::IndexStatus) -> Self {
        Self {
            ready: s.ready,
            files: s.files,
            dirs: s.dirs,
            bytes: s.bytes,
            errors: s.errors,
            skipped: s.skipped,
            version: s.version,
            hashing: s.hashing.map(|h| Hashing {
                files_done: h.files_done,
                files_total: h.files_total,
                bytes_done: h.bytes_done,
                bytes_total: h.bytes_total,
            }),
            hashed_files: s.hashed_files,
            hashed_bytes: s.hashed_bytes,
            root_missing: s.root_missing,
            watch: match s.watch {
                share::WatchState::Off => Watch::Off,
                share::WatchState::Full => Watch::Full,
                share::WatchState::Partial { unwatched } => Watch::Partial { unwatched },
                share::WatchState::Unavailable { reason } => Watch::Unavailable { reason },
            },
        }
    }
}

impl From<ScanError> for LeftOut {
    fn from(e: ScanError) -> Self {
        Self {
            path: e.path,
            reason: e.reason,
        }
    }
}

impl From<PeerStatus> for PeerInfo {
    fn from(p: PeerStatus) -> Self {
        Self {
            peer_id: p.peer_id,
            addrs: p.addrs,
            connections: p.connections,
            agent: p.agent,
            name: p.name,
            rtt_us: p.rtt_us,
        }
    }
}

/// What this node served, with the names of the peers it served.
fn served_view(c: ServedCounts, net: &NetworkClient) -> Served {
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    Served {
        bytes: c.bytes,
        pieces: c.pieces,
        recent: c
            .recent
            .into_iter()
            .map(|s| ServedLine {
                peer_id: s.peer.to_string(),
                name: net.display_name(&s.peer),
                file: s.file,
                bytes: s.bytes,
                last_unix: unix(s.last),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::DownloadState as Task;

    fn progress(state: Task, bytes_done: u64) -> Progress {
        Progress {
            id: crate::share::Id::of(b"x"),
            name: "x".into(),
            kind: share::Kind::File,
            state,
            message: None,
            bytes_total: 10,
            bytes_done,
            files_total: 1,
            files_done: 0,
            peers: 0,
            from: Vec::new(),
            rate: 0,
            path: None,
            bytes_fetched: 0,
            bytes_local: 0,
            bytes_resumed: 0,
            elapsed_ms: 0,
            write_error: None,
        }
    }

    fn done_bytes(r: &Response) -> (DownloadState, u64) {
        match r {
            Response::Download(p) => (p.state, p.bytes_done),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_follow_sends_now_then_each_change_and_ends_at_the_final_state() {
        let (tx, rx) = watch::channel(progress(Task::Fetching, 0));
        let replies = tokio::spawn(follow(Download::from, rx).collect::<Vec<_>>());
        for n in 1..=3 {
            tokio::time::sleep(FOLLOW_EVERY * 2).await;
            tx.send_modify(|p| p.bytes_done = n);
        }
        tokio::time::sleep(FOLLOW_EVERY * 2).await;
        tx.send_modify(|p| {
            p.state = Task::Done;
            p.bytes_done = 10;
        });
        let got: Vec<_> = replies.await.unwrap().iter().map(done_bytes).collect();
        assert_eq!(got.first(), Some(&(DownloadState::Fetching, 0)));
        assert_eq!(got.last(), Some(&(DownloadState::Done, 10)), "{got:?}");
        // Changes in between arrive in order (a slow follower may skip some: latest value).
        assert!(got.len() >= 2, "{got:?}");
        assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "{got:?}");
        drop(tx);
    }

    #[tokio::test]
    async fn a_follow_ends_when_the_download_task_is_gone() {
        let (tx, rx) = watch::channel(progress(Task::Fetching, 5));
        let replies = tokio::spawn(follow(Download::from, rx).collect::<Vec<_>>());
        tokio::time::sleep(FOLLOW_EVERY * 2).await;
        drop(tx);
        let got = replies.await.unwrap();
        assert_eq!(got.len(), 1, "the progress of the start, then the end");
    }
}
