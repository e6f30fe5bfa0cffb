//! `iwant node`: runs the daemon in the foreground until Ctrl-C or SIGTERM.

use std::io::Write;

use anyhow::Context;

use super::NodeArgs;
use crate::{
    config::Home,
    daemon::{self, NodeOptions},
};

pub(super) fn run(home: Home, args: NodeArgs) -> anyhow::Result<()> {
    install_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("iwant")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let options = NodeOptions {
            home,
            listen: args.listen,
            peers: args.peer,
            no_mdns: args.no_mdns,
            network_key: args.network_key,
        };
        let node = daemon::start(options)
            .await
            .context("cannot start the node")?;
        if node.notify {
            node.transfers
                .on_end(std::sync::Arc::new(super::notify::download_ended));
        }
        print_banner(&node);
        tokio::spawn(watch_signals(node.shutdown_token()));
        node.wait().await;
        tracing::info!("stopped");
        Ok(())
    });
    // A blocking task still running (a read of a hung disk) must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

/// Where a node started with `--detach` logs.
pub fn log_file(home: &Home) -> std::path::PathBuf {
    home.root().join("node.log")
}

/// A log this long (or longer) is moved to `node.log.1` when a detached node starts.
const LOG_ROTATE_BYTES: u64 = 10 << 20;

/// `iwant node --detach`: starts this program's `node` with the same options in a session of
/// its own (it outlives the terminal), its output appended to the home's `node.log`, and
/// returns once it answers (or says why it could not start).
pub(super) fn detach(home: Home, args: NodeArgs) -> anyhow::Result<()> {
    use std::process::{Command, Stdio};
    home.create()?;
    let log = log_file(&home);
    if std::fs::metadata(&log).is_ok_and(|m| m.len() >= LOG_ROTATE_BYTES) {
        let _ = std::fs::rename(&log, log.with_extension("log.1"));
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open the log file {}", log.display()))?;
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--home").arg(home.root()).arg("node");
    for addr in &args.listen {
        cmd.arg("--listen").arg(addr.to_string());
    }
    for addr in &args.peer {
        cmd.arg("--peer").arg(addr.to_string());
    }
    if args.no_mdns {
        cmd.arg("--no-mdns");
    }
    if let Some(key) = &args.network_key {
        cmd.arg("--network-key").arg(std::path::absolute(key)?);
    }
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: `setsid` is async-signal-safe and touches nothing of the parent's memory.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        const DETACHED_PROCESS: u32 = 0x0000_0008;
        const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
        cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
    }
    let mut child = cmd.spawn().context("cannot start the node")?;
    let client = crate::control::Client::new(home.clone());
    let runtime = super::client_runtime()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the node did not start ({status}); its log, {}, says why:\n{}",
                log.display(),
                tail(&log, 20)
            );
        }
        if runtime
            .block_on(client.request(crate::control::Request::Status))
            .is_ok()
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the node started (pid {}) but does not answer yet; see {}",
                child.id(),
                log.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let flag = home.cli_flag();
    outln!(
        "The node runs in the background (pid {}); its log is {}.\nStop it with `iwant{flag} stop`; see it with `iwant{flag} status`.",
        child.id(),
        log.display()
    );
    Ok(())
}

/// The last `n` lines of `path` (at most 64 KiB of it).
fn tail(path: &std::path::Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 << 10)));
    let mut text = String::new();
    let _ = f.read_to_string(&mut text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `iwant stop`: asks the node to stop and waits until it has.
pub(super) async fn stop(home: Home, json: bool) -> anyhow::Result<()> {
    use crate::control::{Client, ClientError, Request, Response};
    let client = Client::new(home);
    let pid = match client.request(Request::Stop).await {
        Ok(Response::Stopping { pid }) => pid,
        Ok(other) => anyhow::bail!("the node answered a stop with {other:?}"),
        Err(ClientError::NotRunning { .. }) => {
            if json {
                return super::print_json(
                    &serde_json::json!({ "stopped": false, "running": false }),
                );
            }
            outln!("No node is running on this home.");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    // Gone when its control channel is.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while client.request(Request::Status).await.is_ok() {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the node (pid {pid}) was asked to stop but still answers after 15 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if json {
        return super::print_json(&serde_json::json!({ "stopped": true, "pid": pid }));
    }
    outln!("Stopped the node (pid {pid}).");
    Ok(())
}

/// `println!` that never panics: with `iwant node | tee log`, a Ctrl-C kills `tee` first, and
/// the node must still stop cleanly with its stdout closed.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// What the user sees once the node runs: set apart from the log lines by blank lines, and on
/// a first run, what to do next, spelled with the command that works here.
fn print_banner(node: &daemon::RunningNode) {
    let folders = node.folders.borrow().clone();
    let home = node.home();
    let iwant = format!("{}{}", command_name(), home.cli_flag());
    say!();
    if node.first_run {
        say!(
            "  Welcome to iwant! Created a new node in {}",
            home.root().display()
        );
    }
    say!(
        "  iwant node {} is running; Ctrl-C stops it.",
        node.peer_id()
    );
    say!("  Sharing:      {}", folders.shared_dir.display());
    say!("  Downloads to: {}", folders.download_dir.display());
    if node.first_run {
        say!();
        say!("  Next, in another terminal:");
        say!("    {iwant} search <words>       find what anyone here shares");
        say!("    {iwant} get <id>             download it (the id search shows)");
        say!("    {iwant} status               peers and downloads");
        say!("    {iwant} share <folder>       share another folder");
        say!("    {iwant} download-to <folder> save downloads elsewhere");
    }
    say!();
}

/// How to run this program from a shell: `iwant` when that finds this very binary on the
/// `PATH`, else its full path (after `cargo run`, `target/release/iwant`).
fn command_name() -> String {
    let Ok(me) = std::env::current_exe().and_then(dunce::canonicalize) else {
        return "iwant".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let name = me.file_name().unwrap_or_default();
            dunce::canonicalize(dir.join(name)).is_ok_and(|found| found == me)
        })
    });
    if on_path {
        "iwant".into()
    } else {
        me.display().to_string()
    }
}

/// The first Ctrl-C or SIGTERM stops the node gracefully; a second Ctrl-C exits at once.
async fn watch_signals(shutdown: tokio_util::sync::CancellationToken) {
    let first = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                },
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    };
    first.await;
    tracing::info!("shutting down; press Ctrl-C again to exit at once");
    shutdown.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        let _ = writeln!(std::io::stderr(), "exiting at once");
        std::process::exit(130);
    }
}

fn install_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("IWANT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter_text = filter.to_lowercase();
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        let _ = writeln!(
            std::io::stderr(),
            "warning: ignoring the log filter {filter:?}: {e}"
        );
        EnvFilter::new("info")
    });
    use std::io::IsTerminal;
    // For people: the local time and the message; where in the code a line comes from only
    // when a debug filter asks for detail.
    let detail = ["debug", "trace", "::"]
        .iter()
        .any(|w| filter_text.contains(w));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(tracing_subscriber::fmt::time::ChronoLocal::new(if detail {
            "%Y-%m-%d %H:%M:%S%.3f".into()
        } else {
            "%H:%M:%S".into()
        }))
        .with_target(detail)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr (the `tee` it went to was killed) loses log lines, nothing more:
        // reporting the failed write would itself write to stderr and panic.
        .log_internal_errors(false)
        .init();
}
