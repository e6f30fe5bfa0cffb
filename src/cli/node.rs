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
