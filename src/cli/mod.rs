//! The command line: argument parsing and one module per command group.
//!
//! Every command but `node` is a thin client of the running daemon's control channel. Output
//! for people goes to stdout; with `--json`, stdout holds exactly one JSON document. Errors go
//! to stderr, once, with their cause chain.

/// `print!` for a command's output: when the reader went away (`iwant ls --json | head`) the
/// command ends quietly, where `print!` would panic.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*))
    };
}

/// `println!` for a command's output, as [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod folders;
mod get;
mod ls;
mod node;
mod notify;
mod search;
mod service;
mod status;
mod term;

use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;

use crate::{
    config::{Home, Role, HOME_ENV},
    control::ClientError,
};

/// Exit code for a command that needs the daemon when none is running.
pub const EXIT_NOT_RUNNING: u8 = 3;

/// iwant: find and fetch files on your LAN, with no server.
#[derive(Debug, Parser)]
#[command(
    name = "iwant",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// The node's home directory (identity, config, database) [default: the platform's data
    /// directory]
    #[arg(long, global = true, env = HOME_ENV, value_name = "DIR")]
    pub home: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node in the foreground (Ctrl-C stops it), or with --detach in the background
    Node(NodeArgs),
    /// Stop the node running in the background (or in another terminal)
    Stop {
        #[command(flatten)]
        json: JsonArg,
    },
    /// Show this node's peer id, addresses, connected peers, folders and downloads
    Status {
        /// Forget the downloads that ended (done, failed, cancelled) instead
        #[arg(long)]
        clear: bool,
        /// Show peers' full ids, addresses and agents
        #[arg(long, short)]
        verbose: bool,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Show the shared and download folders
    Config(JsonArg),
    /// List what this node shares (or what is in one of its folders): path, size, id, kind
    Ls {
        /// Only this folder of the share (or this file): its path in the shared folder
        #[arg(value_name = "PATH", conflicts_with_all = ["errors", "skipped"])]
        path: Option<String>,
        /// List the entries that could not be indexed, and why
        #[arg(long)]
        errors: bool,
        /// List what was left out on purpose (hidden files, secrets, ignore rules), and why
        #[arg(long, conflicts_with = "errors")]
        skipped: bool,
        /// List what another node shares instead: its name (as `iwant status` shows it) or the
        /// start or end of its peer id
        #[arg(long, value_name = "NODE", conflicts_with_all = ["errors", "skipped"])]
        peer: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Find files and folders shared anywhere on the network, by name
    #[command(
        long_about = "Find files and folders shared anywhere on the network, by name.\n\nMatching is forgiving: case- and accent-insensitive (`cafe` finds Café), letters in order but not together (`btmn` finds batman), words in any order, small typos. An exact name ranks first, then names that start with the words, then names containing them, then looser matches; a match in the name beats one in the folder path, and equal matches come in natural order (track 2 before track 10). Each result is one piece of content, however many peers hold it."
    )]
    Search {
        /// The words to look for
        #[arg(required = true, value_name = "WORDS")]
        words: Vec<String>,
        /// Show at most N results
        #[arg(long, short = 'n', value_name = "N", default_value_t = 20,
              value_parser = clap::value_parser!(u32).range(1..=200))]
        limit: u32,
        /// Only files or only directories
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Show page P of the results (pages of --limit results; the first is 1)
        #[arg(long, value_name = "P", conflicts_with = "offset",
              value_parser = clap::value_parser!(u32).range(1..))]
        page: Option<u32>,
        /// Skip the N best results
        #[arg(long, value_name = "N")]
        offset: Option<u32>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Download a file or folder by id from every node that has it
    #[command(
        long_about = "Download a file or folder by id from every node that has it, into the download folder.\n\nThe id (or its first digits) is what `iwant search` shows. The download belongs to the node: leaving with Ctrl-C does not stop it (watch it with `iwant status`, or run the same `iwant get` again to follow it), and it resumes by itself after a restart. Every piece is verified; a name that exists already is never overwritten (the new one gets a ` (1)` suffix)."
    )]
    Get {
        /// The content id, or a unique prefix of it (at least 4 hex digits); or words to
        /// search for, to pick from the matches
        #[arg(value_name = "ID|WORDS", required = true)]
        id: Vec<String>,
        /// Save it under this name [default: the name `iwant search` showed for it]
        #[arg(long = "as", value_name = "NAME")]
        name: Option<String>,
        /// Save it in this folder instead of the download folder
        #[arg(long, short = 'o', visible_alias = "to", value_name = "DIR")]
        output: Option<PathBuf>,
        /// Fetch it even though this node has it already
        #[arg(long)]
        again: bool,
        /// Start the download and return at once
        #[arg(long)]
        detach: bool,
        /// Print progress as JSON lines, then the result (also when stdout is not a terminal)
        #[arg(long)]
        json: bool,
    },
    /// Stop a download and remove its partial data
    Cancel {
        /// The content id, or a unique prefix of it
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Share the folder PATH (replaces the shared folder)
    ///
    /// Refused: the root of the file system, system folders, this node's home, a file. Your
    /// whole home folder, or a folder containing it or this node's home, only with --force.
    Share {
        /// The folder to share
        path: PathBuf,
        #[command(flatten)]
        change: ChangeArgs,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Save downloads into DIR
    ///
    /// Refused: the root of the file system, system folders, this node's home, a file, a
    /// folder inside the shared folder or containing it. Your whole home folder only with --force.
    DownloadTo {
        /// The download folder
        dir: PathBuf,
        #[command(flatten)]
        change: ChangeArgs,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Show this node's name, or set it to NEW (what other people see instead of a peer id)
    Name {
        /// The new name (at most 32 characters) [default: the machine's host name]
        #[arg(value_name = "NEW")]
        new: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Write a new private-network key file
    #[command(
        long_about = "Write a new private-network key file (readable by its owner only).\n\nNodes started with `iwant node --network-key <file>` (or `network_key = \"<file>\"` in config.toml) connect only to nodes holding the same key: others can neither connect, nor see, search or fetch anything. Copy the file to every node of the network, and keep it secret: whoever has it can join. The format is libp2p's (go-libp2p's and IPFS's `swarm.key`)."
    )]
    Keygen {
        /// Where to write the key [default: network.key in the node's home]
        #[arg(value_name = "FILE")]
        path: Option<PathBuf>,
        /// Replace the file if it exists
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Run the node in the background at every login (systemd user unit on Linux, launchd
    /// agent on macOS, scheduled task on Windows), or stop doing so
    Service {
        #[arg(value_enum)]
        action: ServiceAction,
    },
    /// Print a shell completion script
    #[command(
        long_about = "Print a shell completion script for SHELL.\n\nbash: `iwant completions bash > ~/.local/share/bash-completion/completions/iwant`\nzsh: `iwant completions zsh > ~/.zfunc/_iwant` (with `fpath+=~/.zfunc` before `compinit` in ~/.zshrc)\nfish: `iwant completions fish > ~/.config/fish/completions/iwant.fish`\nPowerShell: `iwant completions powershell >> $PROFILE`"
    )]
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command into DIR
    #[command(
        long_about = "Print the manual page of iwant (roff, for `man`), or with --dir write iwant.1 and one page per command (iwant-get.1, ...) into DIR.\n\nRead it at once with `iwant man | man -l -`, or install it with `iwant man --dir ~/.local/share/man/man1`."
    )]
    Man {
        /// Write iwant.1 and a page per command into this folder instead
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Options of `iwant node`.
#[derive(Debug, Args)]
struct NodeArgs {
    /// Listen on this address (repeatable): a port (`4748`), `ip:port` or a multiaddr
    /// [default: every IPv4 interface on port 4747, or a free port if 4747 is taken]
    #[arg(long, value_name = "ADDR", value_parser = crate::net::addr::parse_listen)]
    listen: Vec<Multiaddr>,
    /// Dial this peer and keep redialing it (repeatable), for networks without multicast:
    /// `ip:port`, `host:port` or a multiaddr
    #[arg(long, value_name = "ADDR", value_parser = crate::net::addr::parse_peer)]
    peer: Vec<Multiaddr>,
    /// Do not discover peers with mDNS
    #[arg(long)]
    no_mdns: bool,
    /// Run a private network: connect only to nodes with this key file (see `iwant keygen`)
    #[arg(long, value_name = "FILE")]
    network_key: Option<PathBuf>,
    /// Run in the background, logging into node.log in the home; `iwant stop` stops it
    #[arg(long, short = 'd')]
    detach: bool,
}

/// `iwant service` actions.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ServiceAction {
    /// Write and enable the service (it starts the node now and at every login)
    Install,
    /// Stop and remove the service
    Uninstall,
}

/// `--kind` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KindArg {
    /// Files only
    File,
    /// Directories only
    Dir,
}

/// `--force` and `--create` of `share` and `download-to`.
#[derive(Debug, Args)]
struct ChangeArgs {
    /// Use the folder even though it is your whole home folder or contains it (or this
    /// node's home). System folders and this node's home are refused anyway
    #[arg(long)]
    force: bool,
    /// Create the folder (and its parents) if it does not exist
    #[arg(long)]
    create: bool,
}

impl From<ChangeArgs> for crate::config::FolderChange {
    fn from(args: ChangeArgs) -> Self {
        Self {
            force: args.force,
            create: args.create,
        }
    }
}

#[derive(Debug, Args)]
struct JsonArg {
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    // These need no home.
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "iwant", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
            return ExitCode::SUCCESS;
        }
        Command::Man { dir } => return finish(man(dir)),
        _ => {}
    }
    let json = cli.command.json();
    let result = Home::resolve(cli.home.clone())
        .map_err(anyhow::Error::from)
        .and_then(|home| dispatch(home, cli.command));
    if let (Err(error), true) = (&result, json) {
        // With --json, stdout holds one JSON document, an error too.
        let _ = print_json(&json_error(error));
    }
    finish(result)
}

/// The JSON document of a failed command: `{"error": {"code", "message", "causes"}}`, where
/// `code` is `not_running` (exit code 3) or `failed` (exit code 1).
fn json_error(error: &anyhow::Error) -> serde_json::Value {
    let code = match error.downcast_ref::<ClientError>() {
        Some(ClientError::NotRunning { .. }) => "not_running",
        _ => "failed",
    };
    let causes: Vec<String> = error.chain().skip(1).map(|c| c.to_string()).collect();
    serde_json::json!({ "error": { "code": code, "message": format!("{error:#}"), "causes": causes } })
}

/// The exit code of a command's result; an error goes to stderr.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Never panics on a closed stderr (unlike `eprintln!`).
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            match error.downcast_ref::<ClientError>() {
                Some(ClientError::NotRunning { .. }) => ExitCode::from(EXIT_NOT_RUNNING),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

impl Command {
    /// Whether the command was asked for JSON output.
    fn json(&self) -> bool {
        match self {
            Command::Config(a) => a.json,
            Command::Status { json, .. } => json.json,
            Command::Ls { json, .. }
            | Command::Search { json, .. }
            | Command::Cancel { json, .. }
            | Command::Share { json, .. }
            | Command::DownloadTo { json, .. }
            | Command::Keygen { json, .. }
            | Command::Name { json, .. }
            | Command::Stop { json } => json.json,
            Command::Get { json, .. } => *json,
            Command::Node(_)
            | Command::Completions { .. }
            | Command::Man { .. }
            | Command::Service { .. } => false,
        }
    }
}

fn dispatch(home: Home, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Node(args) if args.detach => node::detach(home, args),
        Command::Node(args) => node::run(home, args),
        Command::Stop { json } => client_runtime()?.block_on(node::stop(home, json.json)),
        Command::Status {
            clear,
            verbose,
            json,
        } => client_runtime()?.block_on(status::run(home, clear, verbose, json.json)),
        Command::Config(a) => client_runtime()?.block_on(folders::show(home, a.json)),
        Command::Ls {
            path,
            peer: Some(peer),
            json,
            ..
        } => client_runtime()?.block_on(ls::browse(home, peer, path, json.json)),
        Command::Ls {
            path,
            errors,
            skipped,
            peer: None,
            json,
        } => client_runtime()?.block_on(ls::run(home, path, errors, skipped, json.json)),
        Command::Search {
            words,
            limit,
            kind,
            page,
            offset,
            json,
        } => {
            let kind = kind.map(|k| match k {
                KindArg::File => crate::share::Kind::File,
                KindArg::Dir => crate::share::Kind::Dir,
            });
            let offset = offset.unwrap_or_else(|| (page.unwrap_or(1) - 1).saturating_mul(limit));
            let page = search::Page { limit, offset };
            client_runtime()?.block_on(search::run(home, words, kind, page, json.json))
        }
        Command::Get {
            id,
            name,
            output,
            again,
            detach,
            json,
        } => {
            let to = output
                .map(|o| std::path::absolute(&o))
                .transpose()
                .map_err(|e| anyhow::anyhow!("invalid --to folder: {e}"))?;
            let ask = get::Ask {
                words: id,
                name,
                to,
                again,
            };
            client_runtime()?.block_on(get::get(home, ask, detach, json))
        }
        Command::Cancel { id, json } => {
            client_runtime()?.block_on(get::cancel(home, id, json.json))
        }
        Command::Share { path, change, json } => client_runtime()?.block_on(folders::set(
            home,
            Role::Shared,
            path,
            change.into(),
            json.json,
        )),
        Command::DownloadTo { dir, change, json } => client_runtime()?.block_on(folders::set(
            home,
            Role::Download,
            dir,
            change.into(),
            json.json,
        )),
        Command::Keygen { path, force, json } => keygen(&home, path, force, json.json),
        Command::Name { new, json } => {
            client_runtime()?.block_on(folders::name(home, new, json.json))
        }
        Command::Service {
            action: ServiceAction::Install,
        } => service::install(&home),
        Command::Service {
            action: ServiceAction::Uninstall,
        } => service::uninstall(),
        Command::Completions { .. } | Command::Man { .. } => unreachable!("run without a home"),
    }
}

/// `iwant man`: the manual page on stdout, or every page into `dir`.
fn man(dir: Option<PathBuf>) -> anyhow::Result<()> {
    use anyhow::Context;
    let cmd = <Cli as clap::CommandFactory>::command();
    match dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            out!("{}", String::from_utf8_lossy(&page));
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("cannot write the pages into {}", dir.display()))?;
            outln!("Wrote the manual pages into {}", dir.display());
        }
    }
    Ok(())
}

/// `iwant keygen`: writes a new network key and says how to use it.
fn keygen(home: &Home, path: Option<PathBuf>, force: bool, json: bool) -> anyhow::Result<()> {
    let path = path.unwrap_or_else(|| home.default_network_key_file());
    let path = std::path::absolute(&path)?;
    let key = crate::net::private::write_new_key(&path, force)?;
    let fingerprint = key.fingerprint().to_string();
    if json {
        return print_json(&serde_json::json!({ "path": path, "fingerprint": fingerprint }));
    }
    outln!("Wrote a new network key to {}", path.display());
    outln!("  Fingerprint: {fingerprint}");
    outln!(
        "Copy it to every node of your network and keep it secret (whoever has it can join). Start each node with `iwant{} node --network-key {}`, or set `network_key = {:?}` in {}.",
        home.cli_flag(),
        path.display(),
        path.display().to_string(),
        home.config_file().display()
    );
    Ok(())
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Writes a command's output to stdout. A closed pipe ends the process at once with success
/// (the reader took what it wanted, as `head` does); another failure to write ends it with an
/// error on stderr.
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to the standard output: {e}");
        std::process::exit(1);
    }
}
