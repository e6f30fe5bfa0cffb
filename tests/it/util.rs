//! Small helpers shared by the integration tests.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The `iwant` binary under test.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_iwant"))
}

/// A command running `iwant --home <home> <args>`, isolated from the caller's environment.
pub fn iwant(home: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("--home").arg(home);
    // No desktop: nodes under test show no notifications (a test that wants them sets these).
    cmd.env_remove("IWANT_HOME")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("RUST_LOG")
        .env("IWANT_LOG", "info");
    cmd
}

/// Runs a finished command and returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.stdin(Stdio::null()).output().expect("run iwant");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Polls `probe` every 50 ms until it returns `Some`, or panics after `limit` naming `what`.
pub fn wait_for<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The async twin of [`wait_for`], for in-process tests.
pub async fn wait_for_async<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The peer ids listed in a `status --json` document.
pub fn peer_ids(status: &Value) -> Vec<String> {
    status["peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A home `dir/home` whose config shares `dir/share` and downloads into `dir/downloads` (both
/// created); returns the three paths (the folders canonical).
pub fn configured_home(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let home = dir.join("home");
    let share = dir.join("share");
    let downloads = dir.join("downloads");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::create_dir_all(&downloads).unwrap();
    let (share, downloads) = (
        share.canonicalize().unwrap(),
        downloads.canonicalize().unwrap(),
    );
    let h = iwant::config::Home::resolve(Some(home.clone())).unwrap();
    let (mut config, _) = h.load_or_create_config().unwrap();
    config.shared_dir = share.clone();
    config.download_dir = downloads.clone();
    h.save_config(&config).unwrap();
    (home, share, downloads)
}

/// Starts a node in this process with its home at `home`, listening on `listen` (a loopback
/// address: mDNS is off), dialing `peers`.
pub async fn start_in_process(
    home: &Path,
    listen: libp2p::Multiaddr,
    peers: Vec<libp2p::Multiaddr>,
) -> iwant::daemon::RunningNode {
    iwant::daemon::start(iwant::daemon::NodeOptions {
        home: iwant::config::Home::resolve(Some(home.to_path_buf())).unwrap(),
        listen: vec![listen],
        peers,
        no_mdns: true,
        network_key: None,
    })
    .await
    .expect("node starts")
}

/// A bare libp2p swarm with `behaviour`, over TCP + Noise + Yamux as iwant nodes use them,
/// whose idle connections stay open for two minutes: the peer that tests write by hand.
pub fn bare_swarm<B: libp2p::swarm::NetworkBehaviour>(behaviour: B) -> libp2p::Swarm<B> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("TCP + Noise + Yamux")
        .with_behaviour(|_| behaviour)
        .expect("an infallible behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

/// A node in this process on 127.0.0.1 (mDNS off) with a fresh home, shared folder and
/// download folder, removed when it is dropped.
pub struct LocalNode {
    pub node: iwant::daemon::RunningNode,
    pub home: PathBuf,
    pub share: PathBuf,
    pub downloads: PathBuf,
    pub dir: tempfile::TempDir,
}

impl LocalNode {
    /// Starts a node dialing `peers`.
    pub async fn start(peers: Vec<libp2p::Multiaddr>) -> LocalNode {
        let dir = tempfile::tempdir().unwrap();
        let (home, share, downloads) = configured_home(dir.path());
        let node = start_in_process(&home, "/ip4/127.0.0.1/tcp/0".parse().unwrap(), peers).await;
        LocalNode {
            node,
            home,
            share,
            downloads,
            dir,
        }
    }

    /// Its first listen address, with its peer id (once the listener reported it: the start
    /// returns before the swarm's first event is handled).
    pub async fn addr(&self) -> libp2p::Multiaddr {
        let first = wait_for_async(Duration::from_secs(10), "a listen address", || async {
            let status = self.node.net.status().await.ok()?;
            status.listen_addrs.first().cloned()
        })
        .await;
        let addr: libp2p::Multiaddr = first.parse().unwrap();
        addr.with(libp2p::multiaddr::Protocol::P2p(self.node.peer_id()))
    }

    /// The paths of what `iwant search <text>` finds through this node (the first 20), or
    /// `None` while it fails.
    pub async fn search_paths(&self, text: &str) -> Option<Vec<String>> {
        let request = iwant::control::Request::Search {
            text: text.into(),
            kind: None,
            limit: 20,
            offset: 0,
        };
        match self.client().request(request).await.ok()? {
            iwant::control::Response::SearchResults(reply) => {
                Some(reply.results.into_iter().map(|r| r.hit.path).collect())
            }
            _ => None,
        }
    }

    /// A control-channel client of it, as the CLI has.
    pub fn client(&self) -> iwant::control::Client {
        iwant::control::Client::new(iwant::config::Home::resolve(Some(self.home.clone())).unwrap())
    }

    /// Writes `content` at `path` (relative) in its shared folder.
    pub fn write(&self, path: &str, content: &[u8]) {
        let path = self.share.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// Whether test `test` can run as root, which it needs `for_what`. Without root it prints one
/// `skipping` line and returns false, except under `CI=true`, where it panics: CI runs as root
/// and must not skip.
#[cfg(unix)]
pub fn root_or_skip(test: &str, for_what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root ({for_what}) in CI");
    }
    eprintln!("skipping {test}: needs root to {for_what}");
    false
}

/// A daemon started from the real binary in the root namespace: always on 127.0.0.1 with mDNS
/// off. Killed when dropped; its output is kept in its home for post-mortems.
pub struct Daemon {
    pub home: PathBuf,
    child: Child,
}

impl Daemon {
    /// Starts `iwant node` on `home` with `extra` arguments and waits until it answers.
    pub fn start(home: &Path, extra: &[&str]) -> Daemon {
        Self::start_with_env(home, extra, &[])
    }

    /// [`Daemon::start`] with more environment variables (e.g. `HOME`).
    pub fn start_with_env(home: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Daemon {
        std::fs::create_dir_all(home).unwrap();
        let log = |name| std::fs::File::create(home.join(name)).unwrap();
        let child = iwant(home)
            .envs(env.iter().copied())
            .args(["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log("node.out"))
            .stderr(log("node.err"))
            .spawn()
            .expect("spawn iwant node");
        let mut daemon = Daemon {
            home: home.to_path_buf(),
            child,
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let home = self.home.clone();
        let child = &mut self.child;
        wait_for(
            Duration::from_secs(20),
            "the node to answer `status`",
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    let err = std::fs::read_to_string(home.join("node.err")).unwrap_or_default();
                    panic!("iwant node exited early with {status}: {err}");
                }
                let (code, out, _) = run(iwant(&home).args(["status", "--json"]));
                (code == 0)
                    .then(|| serde_json::from_str::<Value>(&out).ok())
                    .flatten()
            },
        );
    }

    /// The node's process id.
    #[cfg(unix)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `iwant status --json` of this node.
    pub fn status(&self) -> Value {
        let (code, out, err) = run(iwant(&self.home).args(["status", "--json"]));
        assert_eq!(code, 0, "status failed: {err}");
        serde_json::from_str(&out).expect("status --json is JSON")
    }

    /// Sends SIGTERM (or kills on non-Unix) and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        #[cfg(unix)]
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        #[cfg(not(unix))]
        let _ = self.child.kill();
        wait_for(Duration::from_secs(10), "the node to exit", || {
            self.child.try_wait().ok().flatten()
        })
    }
}

impl Daemon {
    /// Sends SIGINT (Ctrl-C) and waits for the exit; returns how long the node took to exit
    /// and its status.
    #[cfg(unix)]
    pub fn interrupt(mut self) -> (Duration, std::process::ExitStatus) {
        let sent = Instant::now();
        // SAFETY: kill with a valid pid and signal has no memory effects.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let status = wait_for(Duration::from_secs(20), "the node to exit", || {
            self.child.try_wait().ok().flatten()
        });
        (sent.elapsed(), status)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes a FIFO at `path`.
#[cfg(unix)]
pub fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// A child process killed (and reaped) when dropped, whatever the test did.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
