//! The daemon: starts a node's tasks in order and owns their shutdown.
//!
//! Start-up order: home and config → the home's lock (`node.lock`: a second daemon on the same
//! home is refused) → folder rules → identity → control channel → database → network →
//! leader service → indexer → index publisher → control server.
//! Shutdown: one [`CancellationToken`] is cancelled; the indexer drops what it is doing (a
//! walk before its next entry, hashing before its next read); the control server stops
//! accepting and finishes the requests in flight, the network loop drops the `Swarm` (peers
//! see the connections close at once); a [`TaskTracker`] waits for them. Every wait is bounded
//! ([`SHUTDOWN_GRACE`] in all): what does not end in time is left to the process exit. The
//! control socket and then the lock go last, so no second daemon starts beside a living one.

use std::{
    fs::File,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{watch, Mutex};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::{folders_at_start, Config, ConfigError, Folders, Home, Places},
    control, leader,
    net::{self, NetConfig, NetworkClient},
    share::{self, Collection, IndexHandle},
    store::{Db, StoreError},
    transfer::{self, Transfers},
};

/// How to start a node: its home plus command-line overrides of the config.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The node's home.
    pub home: Home,
    /// Listen addresses; empty means those of the config (or the default).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial, in addition to the config's.
    pub peers: Vec<Multiaddr>,
    /// Turn mDNS off, whatever the config says.
    pub no_mdns: bool,
    /// The private network's key file; overrides the config's `network_key`.
    pub network_key: Option<PathBuf>,
}

/// The longest [`RunningNode::wait`] waits for the node's tasks and the indexer to end.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// A node whose tasks are running.
pub struct RunningNode {
    /// The handle to the network task.
    pub net: NetworkClient,
    /// Whether this start created the home's config (a first run).
    pub first_run: bool,
    /// The folders in force; updated when the user changes them.
    pub folders: watch::Receiver<Folders>,
    /// The index of the shared folder.
    pub index: IndexHandle,
    /// What the node offers (the shared folder, and its downloads unless turned off).
    pub offered: share::Offered,
    /// Its downloads.
    pub transfers: Transfers,
    /// Whether the config asks for a desktop notification when a download ends.
    pub notify: bool,
    index_threads: Vec<std::thread::JoinHandle<()>>,
    home: Home,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Kept to the very end: the control socket (or pipe) exists while the node lives.
    listener: Arc<control::Listener>,
    /// The home's lock, released last.
    lock: Option<File>,
}

impl RunningNode {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.net.local_peer_id()
    }

    /// The node's home.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The token that stops the node when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the node has been told to stop and its tasks have ended, at most
    /// [`SHUTDOWN_GRACE`] after the stop; then removes the control socket and releases the
    /// home's lock. A task or thread still running then is left to the process exit.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        // The indexers stop alongside the tasks: they need none of them to finish.
        for (_, index) in self.offered.indexes() {
            index.stop();
        }
        self.tasks.close();
        if tokio::time::timeout_at(deadline.into(), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tasks.len(),
                "some tasks did not stop in time; leaving them"
            );
        }
        let mut threads = self.index_threads;
        while Instant::now() < deadline && !threads.iter().all(|t| t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for thread in threads.drain(..) {
            if !thread.is_finished() {
                tracing::warn!("an indexer did not stop in time; leaving it");
            } else if thread.join().is_err() {
                tracing::error!("an indexer thread panicked");
            }
        }
        drop(self.listener);
        drop(self.lock);
    }

    /// Stops the node and waits for its tasks to end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }
}

/// Starts offering what this node downloaded: the placed files the store remembers for the
/// download folder, and an indexer of that folder that sees only them.
async fn offer_downloads(
    db: &Db,
    download_dir: &std::path::Path,
    config: &Config,
    home: &Home,
    live_roots: share::LiveRoots,
) -> Result<(share::OfferedDownloads, std::thread::JoinHandle<()>), StoreError> {
    let placed = share::placed::stored(db, download_dir).await?;
    let placed = Arc::new(share::placed::Placed::new(placed));
    // What came from the network is offered as it came: hidden names too (a folder's id stays
    // the one it was downloaded as). Secrets, the home and the user's rules still apply.
    let rules = share::ignore::Rules::new(true, &config.ignore, Some(home.root()))
        .only_placed(placed.clone());
    let options = share::IndexOptions {
        rules,
        rescan_interval: config.rescan_interval(),
        collection: Collection::Downloads,
        live_roots,
    };
    let (index, thread) = share::spawn(db.clone(), download_dir.to_path_buf(), options)?;
    Ok((
        share::OfferedDownloads {
            index,
            placed,
            partial: share::partial::Partials::default(),
        },
        thread,
    ))
}

/// Errors that stop a node from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Home, config or folders.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A daemon already runs on this home.
    #[error("another iwant node is already running with the home {0}; stop it first, or start this one with another --home")]
    AlreadyRunning(std::path::PathBuf),
    /// The home's lock file could not be opened.
    #[error("cannot open the lock file {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The control channel could not be opened.
    #[error(transparent)]
    Control(#[from] control::ServerError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The network could not start.
    #[error(transparent)]
    Net(#[from] net::NetError),
    /// The private network's key could not be used.
    #[error(transparent)]
    NetworkKey(#[from] net::private::KeyError),
}

/// Starts a node's tasks on the current tokio runtime.
pub async fn start(options: NodeOptions) -> Result<RunningNode, StartError> {
    let home = options.home;
    home.create()?;
    let lock = lock_home(&home)?;
    let (mut config, first_run) = home.load_or_create_config()?;
    let places = Places::of(home.root());
    let saved = config.folders();
    // A missing default shared folder was never made (a new user); any other may be a disk
    // that is not mounted: it is not replaced by an empty folder.
    let create_shared = first_run || saved.shared_dir == home.default_folders().shared_dir;
    let start = folders_at_start(&saved, create_shared, &places).map_err(ConfigError::from)?;
    let folders = start.folders;
    if start.shared_missing {
        tracing::warn!(
            "the shared folder {} does not exist (an unmounted disk?); nothing is shared until it exists (create it, or choose another with `iwant share`)",
            folders.shared_dir.display()
        );
    }
    if start.download_created {
        tracing::info!(
            "the download folder {} did not exist; created it",
            folders.download_dir.display()
        );
    }
    // Store what is now known to be valid, so the file shows absolute, canonical folders.
    if folders != saved {
        config.set_folders(&folders);
        home.save_config(&config)?;
    }
    let (keypair, _) = home.load_or_create_identity()?;
    let network_key = match options
        .network_key
        .or_else(|| home.network_key_file(&config))
    {
        Some(path) => {
            let key = net::private::load_key(&path)?;
            tracing::info!(key = %path.display(), fingerprint = %key.fingerprint(), "private network: only nodes with this key can connect");
            Some(key)
        }
        None => None,
    };

    let socket = home.control_socket();
    let listener = Arc::new(control::Listener::bind(&socket).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            StartError::AlreadyRunning(home.root().to_path_buf())
        } else {
            StartError::Control(control::ServerError::Bind {
                path: socket.clone(),
                source,
            })
        }
    })?);

    let path = home.database();
    // Opened once: the schema is checked here, and every room takes connections from it.
    let db = tokio::task::spawn_blocking(move || -> Result<Db, crate::store::StoreError> {
        let db = Db::open(&path)?;
        let store = db.get()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if store.meta("created_at")?.is_none() {
            store.set_meta("created_at", &now.to_string())?;
        }
        store.set_meta("last_start", &now.to_string())?;
        drop(store);
        Ok(db)
    })
    .await
    .expect("bug: database task panicked")?;

    let open_files = match crate::limits::raise_open_files() {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot raise the limit on open files; keeping the default");
            // Budget for the usual default soft limit.
            Some(1_024)
        }
    };
    let budget = crate::limits::ConnectionBudget::for_open_files(open_files);
    tracing::debug!(?open_files, ?budget, "open files and connection limits");

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let mut peers = config.peers.clone();
    peers.extend(options.peers);
    let name = config.node_name(&keypair.public().to_peer_id());
    let net_config = NetConfig {
        name,
        listen: if options.listen.is_empty() {
            config.listen.clone()
        } else {
            options.listen
        },
        peers,
        mdns: config.mdns && !options.no_mdns,
        network_key,
        budget,
    };
    let net::Spawned {
        client: net,
        event_loop,
        inbound,
        content_inbound,
    } = net::spawn(keypair, net_config, shutdown.child_token())?;
    tasks.spawn(event_loop.run());
    let (leader, service) = leader::spawn(
        net.clone(),
        inbound,
        config.leader_limits(),
        shutdown.child_token(),
    );
    tasks.spawn(service.run());
    let live_roots = share::LiveRoots::default();
    let options = share::IndexOptions {
        rules: share::ignore::Rules::new(config.include_hidden, &config.ignore, Some(home.root())),
        rescan_interval: config.rescan_interval(),
        collection: Collection::Shared,
        live_roots: live_roots.clone(),
    };
    let mut index_threads = Vec::new();
    let index = match share::spawn(db.clone(), folders.shared_dir.clone(), options) {
        Ok((index, thread)) => {
            index_threads.push(thread);
            index
        }
        Err(e) => {
            shutdown.cancel();
            return Err(e.into());
        }
    };
    tasks.spawn(leader::publish::run(
        index.clone(),
        Collection::Shared,
        net.clone(),
        leader.clone(),
        shutdown.child_token(),
    ));
    let downloads = if config.offer_downloads {
        match offer_downloads(&db, &folders.download_dir, &config, &home, live_roots).await {
            Ok((downloads, thread)) => {
                index_threads.push(thread);
                tasks.spawn(leader::publish::run(
                    downloads.index.clone(),
                    Collection::Downloads,
                    net.clone(),
                    leader.clone(),
                    shutdown.child_token(),
                ));
                tasks.spawn(share::partial::announce(
                    downloads.partial.clone(),
                    net.clone(),
                    leader.clone(),
                    shutdown.child_token(),
                ));
                Some(downloads)
            }
            Err(e) => {
                index.stop();
                shutdown.cancel();
                return Err(e.into());
            }
        }
    } else {
        None
    };
    let offered = share::Offered {
        shared: index.clone(),
        downloads,
    };

    let served = Arc::new(transfer::serve::Served::default());
    tasks.spawn(transfer::serve::run(
        net.clone(),
        offered.clone(),
        content_inbound,
        served.clone(),
        shutdown.child_token(),
    ));

    let (folders_tx, folders_rx) = watch::channel(folders);
    let transfers = Transfers::new(
        net.clone(),
        leader.clone(),
        offered.clone(),
        folders_rx.clone(),
        shutdown.child_token(),
        tasks.clone(),
    );
    match transfers.resume_all().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(downloads = n, "resuming downloads"),
        Err(e) => tracing::warn!(error = %e, "cannot read the downloads to resume"),
    }
    let notify = config.notify;
    let handler = Arc::new(control::Handler {
        transfers: transfers.clone(),
        served,
        net: net.clone(),
        leader,
        offered: offered.clone(),
        home: home.clone(),
        config: Mutex::new(config),
        folders: folders_tx,
        places,
        shutdown: shutdown.clone(),
    });
    tasks.spawn(control::serve(
        listener.clone(),
        move |request| {
            let handler = handler.clone();
            async move { handler.answer(request).await }
        },
        shutdown.child_token(),
    ));

    Ok(RunningNode {
        net,
        first_run,
        transfers,
        notify,
        folders: folders_rx,
        index,
        offered,
        index_threads,
        home,
        shutdown,
        tasks,
        listener,
        lock,
    })
}

/// Takes the home's lock for the life of the node (released when the returned file is
/// closed, also by a crash). A filesystem without locks gets a warning: the control socket
/// still refuses a second daemon that starts while this one runs.
fn lock_home(home: &Home) -> Result<Option<File>, StartError> {
    use std::io::Write;
    let path = home.lock_file();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StartError::Lock {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {
            // For people looking: which process holds it.
            let _ = file.set_len(0);
            let _ = writeln!(file, "{}", std::process::id());
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StartError::AlreadyRunning(home.root().to_path_buf()))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot lock the home; going on without the lock");
            Ok(None)
        }
    }
}
