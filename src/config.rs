//! The node's home directory, its config file, and (in [`folders`]) the rules for the two
//! folders.
//!
//! A home holds everything one node owns:
//!
//! | file | what |
//! |---|---|
//! | `config.toml` | the folders, listen addresses, known peers, mDNS on/off |
//! | `identity.key` | the node's libp2p key (owner-only permissions) |
//! | `iwant.db` | the SQLite database |
//! | `control.sock` | the control channel's Unix socket while the node runs (Unix only) |

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use libp2p::{identity::Keypair, Multiaddr};
use serde::{Deserialize, Serialize};

pub mod folders;

pub use folders::{
    change_folder, folders_at_start, system_folders, FolderChange, FolderError, Folders, Places,
    Role, StartFolders, SystemFolder,
};

/// The TCP port a node listens on unless told otherwise (falls back to a free port if taken).
pub const DEFAULT_PORT: u16 = 4747;

/// The environment variable that overrides the home directory.
pub const HOME_ENV: &str = "IWANT_HOME";

/// Errors about the home, the config file and the folders.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or folder could not be read, written or created.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done, e.g. "cannot create the shared folder".
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The config file is not valid.
    #[error("the config file {path} is not valid: {reason}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The folders break a rule.
    #[error(transparent)]
    Folders(#[from] FolderError),
    /// No home directory could be determined.
    #[error("cannot determine a home directory for iwant; pass --home <dir> or set {HOME_ENV}")]
    NoHome,
}

/// The paths inside one node's home directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
    explicit: bool,
}

impl Home {
    /// The home given by `--home`, else `$IWANT_HOME` (clap fills both into `explicit`), else
    /// the platform's local data directory for iwant: `~/.local/share/iwant` on Linux,
    /// `~/Library/Application Support/iwant` on macOS, `%LOCALAPPDATA%\iwant\data` on Windows
    /// (local, not roaming: the index database is this machine's and may be large).
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Self, ConfigError> {
        match explicit {
            Some(root) => Ok(Self {
                root: std::path::absolute(&root).unwrap_or(root),
                explicit: true,
            }),
            None => {
                let dirs =
                    directories::ProjectDirs::from("", "", "iwant").ok_or(ConfigError::NoHome)?;
                Ok(Self {
                    root: dirs.data_local_dir().to_path_buf(),
                    explicit: false,
                })
            }
        }
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// `identity.key`.
    pub fn identity_file(&self) -> PathBuf {
        self.root.join("identity.key")
    }

    /// `iwant.db`.
    pub fn database(&self) -> PathBuf {
        self.root.join("iwant.db")
    }

    /// `control.sock` (on Windows the name is only used to derive the pipe name).
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }

    /// `node.lock`: held by the running node for its whole life.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("node.lock")
    }

    /// Whether the home was given (`--home`, `$IWANT_HOME`) rather than the default.
    pub fn is_explicit(&self) -> bool {
        self.explicit
    }

    /// ` --home <dir>` when the home was given explicitly, else nothing: what a printed
    /// command needs to reach this home.
    pub fn cli_flag(&self) -> String {
        if self.explicit {
            format!(" --home {}", self.root.display())
        } else {
            String::new()
        }
    }

    /// Creates the home directory (owner-only on Unix) if it does not exist.
    pub fn create(&self) -> Result<(), ConfigError> {
        create_private_dir(&self.root).map_err(|source| ConfigError::Io {
            what: "cannot create the iwant home",
            path: self.root.clone(),
            source,
        })
    }

    /// The default folders for a new config: inside the home when the home was chosen
    /// explicitly (so several nodes on one machine stay apart), else `~/iwant/shared` and
    /// `~/iwant/downloads`.
    pub fn default_folders(&self) -> Folders {
        let base = if self.explicit {
            self.root.clone()
        } else {
            directories::UserDirs::new()
                .map(|u| u.home_dir().join("iwant"))
                .unwrap_or_else(|| self.root.clone())
        };
        Folders {
            shared_dir: base.join("shared"),
            download_dir: base.join("downloads"),
        }
    }

    /// The network key file `config` names, resolved against the home.
    pub fn network_key_file(&self, config: &Config) -> Option<PathBuf> {
        config.network_key.as_ref().map(|path| self.root.join(path))
    }

    /// Where `iwant keygen` writes a key unless told otherwise.
    pub fn default_network_key_file(&self) -> PathBuf {
        self.root.join("network.key")
    }

    /// Loads `config.toml`, or creates it with defaults. The flag says whether it was created.
    pub fn load_or_create_config(&self) -> Result<(Config, bool), ConfigError> {
        let path = self.config_file();
        match fs::read_to_string(&path) {
            Ok(text) => {
                let config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                    path: path.clone(),
                    reason: e.message().to_string(),
                })?;
                Ok((config, false))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.create()?;
                let Folders {
                    shared_dir,
                    download_dir,
                } = self.default_folders();
                let config = Config {
                    name: None,
                    shared_dir,
                    download_dir,
                    listen: Vec::new(),
                    peers: Vec::new(),
                    mdns: true,
                    network_key: None,
                    include_hidden: false,
                    ignore: Vec::new(),
                    rescan_interval_secs: default_rescan(),
                    leader_index_entries: default_leader_entries(),
                    offer_downloads: true,
                    notify: true,
                };
                self.save_config(&config)?;
                Ok((config, true))
            }
            Err(source) => Err(ConfigError::Io {
                what: "cannot read the config file",
                path,
                source,
            }),
        }
    }

    /// Writes `config.toml` atomically (a temporary file renamed over the old one).
    pub fn save_config(&self, config: &Config) -> Result<(), ConfigError> {
        let path = self.config_file();
        let text = format!(
            "# iwant node configuration. `iwant share <path>` and `iwant download-to <dir>` edit it.\n{}",
            toml::to_string_pretty(config).expect("bug: the config always serialises")
        );
        let tmp = path.with_extension("toml.tmp");
        let io_err = |source| ConfigError::Io {
            what: "cannot write the config file",
            path: path.clone(),
            source,
        };
        fs::write(&tmp, text).map_err(io_err)?;
        fs::rename(&tmp, &path).map_err(io_err)
    }

    /// Loads the node's identity key, or creates one (owner-only permissions). The flag says
    /// whether it was created.
    pub fn load_or_create_identity(&self) -> Result<(Keypair, bool), ConfigError> {
        let path = self.identity_file();
        match fs::read(&path) {
            Ok(bytes) => {
                let key =
                    Keypair::from_protobuf_encoding(&bytes).map_err(|e| ConfigError::Invalid {
                        path: path.clone(),
                        reason: format!(
                            "not a libp2p key ({e}); move it away to create a new identity"
                        ),
                    })?;
                Ok((key, false))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = Keypair::generate_ed25519();
                let bytes = key
                    .to_protobuf_encoding()
                    .expect("bug: ed25519 keys always encode");
                write_private_file(&path, &bytes).map_err(|source| ConfigError::Io {
                    what: "cannot write the identity key",
                    path: path.clone(),
                    source,
                })?;
                Ok((key, true))
            }
            Err(source) => Err(ConfigError::Io {
                what: "cannot read the identity key",
                path,
                source,
            }),
        }
    }
}

/// The persisted configuration (`config.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The name other people see for this node (`iwant name`); at most 32 characters.
    /// Default: the machine's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The folder whose contents this node shares.
    pub shared_dir: PathBuf,
    /// The folder downloads are written to.
    pub download_dir: PathBuf,
    /// Addresses to listen on; empty means `/ip4/0.0.0.0/tcp/4747`, or a free port if taken.
    #[serde(default)]
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and whenever they are disconnected.
    #[serde(default)]
    pub peers: Vec<Multiaddr>,
    /// Whether to discover peers with mDNS.
    #[serde(default = "yes")]
    pub mdns: bool,
    /// The private network's key file (`iwant keygen` makes one); relative paths are relative
    /// to the home. Without it the node joins the open network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_key: Option<PathBuf>,
    /// Whether hidden files and folders (dot names; the hidden attribute on Windows) are
    /// shared. Secrets and the node's home never are. Default: `false`.
    #[serde(default)]
    pub include_hidden: bool,
    /// More to leave out of the share: gitignore patterns relative to the shared folder, e.g.
    /// `["*.iso", "private/"]`. They add skips; they cannot share a secret. Default: none.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// How often, in seconds, the whole shared folder is re-walked to catch changes the
    /// watcher missed (1 to 86,400). Default: 60.
    #[serde(default = "default_rescan", skip_serializing_if = "is_default_rescan")]
    pub rescan_interval_secs: u64,
    /// While this node leads: how many index entries of all nodes together it holds (1,000 to
    /// 10,000,000; one node at most half). When it is full, the largest node's entries make
    /// room for a smaller node's. About 200 bytes each. Default: 2,000,000.
    #[serde(
        default = "default_leader_entries",
        skip_serializing_if = "is_default_leader_entries"
    )]
    pub leader_index_entries: u64,
    /// Whether what this node downloaded is offered to the network in turn, so that every
    /// finished copy is one more source: only the files iwant itself placed in the download
    /// folder, and each only while unchanged (nothing else there is ever offered). Default:
    /// `true`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub offer_downloads: bool,
    /// Whether the node shows a desktop notification when a download completes or fails
    /// (where it runs in a desktop session: `notify-send` on Linux, Notification Center on
    /// macOS; not on Windows yet). Default: `true`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub notify: bool,
}

impl Config {
    /// The configured name, else the host name, cleaned; `None` if neither has a visible
    /// character.
    pub fn chosen_name(&self) -> Option<String> {
        self.name
            .as_deref()
            .and_then(iwant_behaviours::clean_name)
            .or_else(|| iwant_behaviours::clean_name(&gethostname::gethostname().to_string_lossy()))
    }

    /// The name this node goes by: the configured one, else the host name, else `iwant-`
    /// and the end of its peer id; cleaned ([`iwant_behaviours::clean_name`]).
    pub fn node_name(&self, peer: &libp2p::PeerId) -> String {
        self.chosen_name().unwrap_or_else(|| {
            format!(
                "iwant-{}",
                crate::net::short_peer(peer).trim_start_matches('…')
            )
        })
    }
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The bounds of [`Config::leader_index_entries`].
pub const LEADER_INDEX_ENTRIES: std::ops::RangeInclusive<u64> = 1_000..=10_000_000;

fn default_leader_entries() -> u64 {
    2_000_000
}

fn is_default_leader_entries(n: &u64) -> bool {
    *n == default_leader_entries()
}

/// The longest allowed rescan interval, in seconds (a day).
pub const MAX_RESCAN_INTERVAL_SECS: u64 = 86_400;

fn default_rescan() -> u64 {
    crate::share::RESCAN_INTERVAL.as_secs()
}

fn is_default_rescan(secs: &u64) -> bool {
    *secs == default_rescan()
}

impl Config {
    /// The two folders.
    pub fn folders(&self) -> Folders {
        Folders {
            shared_dir: self.shared_dir.clone(),
            download_dir: self.download_dir.clone(),
        }
    }

    /// Sets the two folders.
    pub fn set_folders(&mut self, folders: &Folders) {
        self.shared_dir = folders.shared_dir.clone();
        self.download_dir = folders.download_dir.clone();
    }

    /// The leader's index limits, within their bounds.
    pub fn leader_limits(&self) -> crate::leader::index::Limits {
        let all = self
            .leader_index_entries
            .clamp(*LEADER_INDEX_ENTRIES.start(), *LEADER_INDEX_ENTRIES.end())
            as usize;
        crate::leader::index::Limits {
            max_entries_per_peer: all / 2,
            max_entries: all,
        }
    }

    /// The rescan interval, within its bounds.
    pub fn rescan_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.rescan_interval_secs.clamp(1, MAX_RESCAN_INTERVAL_SECS))
    }
}

fn yes() -> bool {
    true
}

/// Creates a directory (and its parents); the directory itself is owner-only on Unix.
fn create_private_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !path.exists() {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::DirBuilder::new().mode(0o700).create(path)?;
        } else if path.is_dir() {
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        // On Windows the platform's per-user data directory is already private to the user.
        fs::create_dir_all(path)
    }
}

/// Writes a new file that only its owner can read (on Unix; on Windows the file inherits the
/// private ACL of the per-user home).
pub(crate) fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_identity_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().join("home"))).unwrap();
        let (config, created) = home.load_or_create_config().unwrap();
        assert!(created);
        assert_eq!(config.shared_dir, home.root().join("shared"));
        let (again, created) = home.load_or_create_config().unwrap();
        assert!(!created);
        assert_eq!(config, again);
        let (key, created) = home.load_or_create_identity().unwrap();
        assert!(created);
        let (same, _) = home.load_or_create_identity().unwrap();
        assert_eq!(key.public(), same.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(home.identity_file())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = fs::metadata(home.root()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    #[test]
    fn invalid_config_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().to_path_buf())).unwrap();
        fs::write(home.config_file(), "shared_dir = 3").unwrap();
        let err = home.load_or_create_config().unwrap_err();
        assert!(err.to_string().contains("config.toml"), "{err}");
    }
}
