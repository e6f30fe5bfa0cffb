//! What is never shared: the rules the walk consults before it indexes an entry.
//!
//! Precedence, first match wins:
//! 1. the node's own home (identity, config, database) is never shared;
//! 2. the built-in secrets ([`SECRETS`]) are never shared, whatever the other rules say
//!    (hidden files included, `!` negations in `.iwantignore` or config notwithstanding);
//! 3. hidden entries (dot names; on Windows the hidden attribute too) are skipped unless the
//!    config sets `include_hidden = true`;
//! 4. the config's `ignore` patterns (gitignore syntax, relative to the shared folder);
//! 5. `.iwantignore` files at any level (gitignore syntax, relative to their directory; a deeper
//!    file overrides a shallower one, `!` negates within these files).
//!
//! User rules (4, 5) only add skips: they cannot un-skip what 1 to 3 skipped.
//!
//! The download folder (offered as the downloads collection) has one more rule, before all
//! of these: only the files this node's downloads placed there, and the folders above them,
//! are indexed ([`Rules::only_placed`], [`super::placed`]).

use std::{
    collections::HashMap,
    fs::{self, Metadata},
    path::{Path, PathBuf},
    sync::Arc,
};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::placed::Placed;

/// The name of the per-directory rules file.
pub const IGNORE_FILE: &str = ".iwantignore";

/// The largest `.iwantignore` read, in bytes; a larger one is read up to this size.
pub const MAX_IGNORE_FILE: u64 = 1 << 20;

/// The reason given for the node's own home.
pub const HOME_REASON: &str = "the node's own home (identity, config, database)";

/// The built-in secrets: gitignore patterns (matched at any depth) and what they are.
pub const SECRETS: &[(&str, &str)] = &[
    ("id_rsa", "SSH private key (id_*)"),
    ("id_dsa", "SSH private key (id_*)"),
    ("id_ecdsa", "SSH private key (id_*)"),
    ("id_ecdsa_sk", "SSH private key (id_*)"),
    ("id_ed25519", "SSH private key (id_*)"),
    ("id_ed25519_sk", "SSH private key (id_*)"),
    ("*.ppk", "PuTTY private key (*.ppk)"),
    (".ssh/", "SSH folder (.ssh)"),
    (".gnupg/", "GPG keyring (.gnupg)"),
    ("secring.*", "GPG secret keyring (secring.*)"),
    ("*.pem", "key or certificate (*.pem)"),
    ("*.key", "private key (*.key)"),
    ("*.p12", "key store (*.p12)"),
    ("*.pfx", "key store (*.pfx)"),
    ("*.jks", "Java key store (*.jks)"),
    ("*.keystore", "key store (*.keystore)"),
    ("*.kdbx", "KeePass database (*.kdbx)"),
    (".env", "environment secrets (.env)"),
    (".env.*", "environment secrets (.env.*)"),
    (".netrc", "login credentials (.netrc)"),
    ("_netrc", "login credentials (_netrc)"),
    (".pgpass", "PostgreSQL passwords (.pgpass)"),
    (
        ".git-credentials",
        "Git credential store (.git-credentials)",
    ),
    (".npmrc", "npm credentials (.npmrc)"),
    (".pypirc", "PyPI credentials (.pypirc)"),
    (".aws/", "AWS credentials (.aws)"),
    (".azure/", "Azure credentials (.azure)"),
    (".kube/", "Kubernetes credentials (.kube)"),
    (
        ".docker/config.json",
        "Docker credentials (.docker/config.json)",
    ),
    (
        "**/.config/gcloud/",
        "Google Cloud credentials (.config/gcloud)",
    ),
    (".password-store/", "pass password store (.password-store)"),
    ("Keychains/", "macOS keychains (Keychains)"),
    ("*.keychain-db", "macOS keychain (*.keychain-db)"),
    (".mozilla/", "browser profile (.mozilla)"),
    (".thunderbird/", "mail profile (.thunderbird)"),
    (
        "**/.config/google-chrome/",
        "browser profile (.config/google-chrome)",
    ),
    ("**/.config/chromium/", "browser profile (.config/chromium)"),
    (
        "**/.config/BraveSoftware/",
        "browser profile (.config/BraveSoftware)",
    ),
    (
        "**/Library/Application Support/Google/Chrome/",
        "browser profile (Google/Chrome)",
    ),
    (
        "**/Library/Application Support/Firefox/",
        "browser profile (Firefox)",
    ),
    (
        "**/AppData/Local/Google/Chrome/",
        "browser profile (Google/Chrome)",
    ),
    ("**/AppData/Roaming/Mozilla/", "browser profile (Mozilla)"),
    ("wallet.dat", "cryptocurrency wallet (wallet.dat)"),
    (".bitcoin/", "cryptocurrency wallet (.bitcoin)"),
    (".ethereum/", "cryptocurrency wallet (.ethereum)"),
    (".electrum/", "cryptocurrency wallet (.electrum)"),
    ("keystore/", "cryptocurrency key store (keystore)"),
    (".*_history", "shell or console history (.*_history)"),
    (".zhistory", "shell history (.zhistory)"),
    ("fish_history", "shell history (fish_history)"),
    (IGNORE_FILE, "iwant's own rules file (.iwantignore)"),
];

/// Why an entry was left out.
pub type Reason = String;

/// The rules of one shared folder, built from the config; cheap to clone.
#[derive(Debug, Clone)]
pub struct Rules {
    secrets: Gitignore,
    include_hidden: bool,
    config: Gitignore,
    home: Option<PathBuf>,
    /// For the download folder: only what this node's downloads placed there, unchanged.
    only: Option<Arc<Placed>>,
}

impl Default for Rules {
    /// Hidden files skipped, no config patterns, no home.
    fn default() -> Self {
        Self::new(false, &[], None)
    }
}

impl Rules {
    /// The rules from the config's `include_hidden` and `ignore` patterns (relative to the
    /// shared folder, whichever it is), and the node's home (canonicalised here; a home that
    /// does not exist is ignored). Invalid config patterns are logged and left out.
    pub fn new(include_hidden: bool, patterns: &[String], home: Option<&Path>) -> Self {
        let mut secrets = GitignoreBuilder::new("");
        for (pattern, _) in SECRETS {
            secrets
                .add_line(None, pattern)
                .expect("bug: a built-in secret pattern is invalid");
        }
        let secrets = secrets.build().expect("bug: built-in secret patterns");
        let mut config = GitignoreBuilder::new("");
        for p in patterns {
            if let Err(e) = config.add_line(None, p) {
                tracing::warn!(pattern = %p, error = %e, "ignoring an invalid `ignore` pattern in the config");
            }
        }
        let config = config.build().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the config's `ignore` patterns are invalid; none applies");
            Gitignore::empty()
        });
        Self {
            secrets,
            include_hidden,
            config,
            home: home.and_then(|h| fs::canonicalize(h).ok()),
            only: None,
        }
    }

    /// These rules, and before them: only the files in `placed` (and the folders above them)
    /// are indexed, each only with the content placed (the download folder's rules).
    pub fn only_placed(self, placed: Arc<Placed>) -> Self {
        Self {
            only: Some(placed),
            ..self
        }
    }

    /// Whether the file `rel`, whose content is `id`, is a placed file whose content changed
    /// since (then it is not indexed, [`super::placed::CHANGED`]).
    pub fn changed_since_placed(&self, rel: &str, id: &[u8; 32]) -> bool {
        self.only
            .as_ref()
            .is_some_and(|placed| placed.file(rel).is_some_and(|placed| placed.0 != *id))
    }

    /// The canonical home, if any.
    pub fn home(&self) -> Option<&Path> {
        self.home.as_deref()
    }

    /// Whether `target` (a canonical path) is the home or inside it.
    pub fn in_home(&self, target: &Path) -> bool {
        self.home.as_deref().is_some_and(|h| target.starts_with(h))
    }

    /// Starts a walk of the share at `root`; `.iwantignore` files are read once per walk.
    pub fn walker<'a>(&'a self, root: &'a Path) -> WalkRules<'a> {
        WalkRules {
            rules: self,
            root,
            files: HashMap::new(),
        }
    }
}

/// The rules during one walk, with the `.iwantignore` files read so far.
pub struct WalkRules<'a> {
    rules: &'a Rules,
    root: &'a Path,
    /// Directory (relative, `/`-separated) → its `.iwantignore`, if any, and its lines.
    files: HashMap<String, Option<(Gitignore, Vec<String>)>>,
}

impl WalkRules<'_> {
    /// Why the entry `rel` (relative, `/`-separated, not "") with metadata `meta` is skipped,
    /// or `None` if it is indexed.
    pub fn skip(&mut self, rel: &str, meta: &Metadata) -> Option<Reason> {
        let is_dir = meta.is_dir();
        if let Some(placed) = &self.rules.only {
            let placed = if is_dir {
                placed.has_dir(rel)
            } else {
                placed.file(rel).is_some()
            };
            if !placed {
                return Some(super::placed::NOT_PLACED.into());
            }
        }
        // The home is a directory: files need no path built to know they are not it.
        if is_dir
            && self
                .rules
                .home
                .as_deref()
                // The root is the config's form: without `\\?\` on Windows where it fits.
                .is_some_and(|h| dunce::simplified(h) == super::scan::native(self.root, rel))
        {
            return Some(HOME_REASON.into());
        }
        if let Some(r) = secret(&self.rules.secrets, rel, is_dir) {
            return Some(r);
        }
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if !self.rules.include_hidden && (name.starts_with('.') || hidden_attribute(meta)) {
            return Some("hidden".into());
        }
        if let Some(g) = self.rules.config.matched(rel, is_dir).inner() {
            if !g.is_whitelist() {
                return Some(format!("config ignore: {}", g.original()));
            }
        }
        self.iwantignore(rel, is_dir)
    }

    /// Whether an ancestor of `rel` (a directory a sub-walk starts below) is skipped.
    pub fn ancestor_skipped(&mut self, rel: &str) -> bool {
        let mut at = 0;
        while let Some(i) = rel[at..].find('/') {
            let anc = &rel[..at + i];
            at += i + 1;
            match fs::symlink_metadata(super::scan::native(self.root, anc)) {
                Ok(m) if self.skip(anc, &m).is_some() => return true,
                _ => {}
            }
        }
        false
    }

    fn iwantignore(&mut self, rel: &str, is_dir: bool) -> Option<Reason> {
        // Directories holding rules, deepest first: the parent of `rel`, ..., the root.
        let mut dirs = Vec::new();
        let mut d = rel;
        while let Some(i) = d.rfind('/') {
            d = &d[..i];
            dirs.push(d);
        }
        dirs.push("");
        for dir in dirs {
            // Looked up before inserting: one allocation per directory, not per entry.
            if !self.files.contains_key(dir) {
                let loaded = load(self.root, dir);
                self.files.insert(dir.to_string(), loaded);
            }
            let Some(Some((gi, lines))) = self.files.get(dir) else {
                continue;
            };
            let below = if dir.is_empty() {
                rel
            } else {
                &rel[dir.len() + 1..]
            };
            if let Some(g) = gi.matched(below, is_dir).inner() {
                if g.is_whitelist() {
                    return None;
                }
                let line = lines
                    .iter()
                    .position(|l| l.trim_end() == g.original())
                    .map_or(String::new(), |i| format!(" line {}", i + 1));
                let file = if dir.is_empty() {
                    IGNORE_FILE.to_string()
                } else {
                    format!("{dir}/{IGNORE_FILE}")
                };
                return Some(format!("{file}{line}: {}", g.original()));
            }
        }
        None
    }
}

fn secret(secrets: &Gitignore, rel: &str, is_dir: bool) -> Option<Reason> {
    let matched = secrets.matched(rel, is_dir);
    let g = matched.inner()?;
    SECRETS
        .iter()
        .find(|(p, _)| *p == g.original())
        .map(|(_, what)| format!("secret: {what}"))
}

/// Reads the `.iwantignore` of the directory `dir`; `None` when there is none or it is
/// unreadable (logged). Opened like a file to hash ([`crate::fsio::open_regular`]): a FIFO or
/// device of that name is refused at once instead of blocking the indexer.
fn load(root: &Path, dir: &str) -> Option<(Gitignore, Vec<String>)> {
    use std::io::Read;
    let dir_abs = super::scan::native(root, dir);
    let path = dir_abs.join(IGNORE_FILE);
    let file = match crate::fsio::open_regular(&path) {
        Ok((f, _)) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read an .iwantignore");
            return None;
        }
    };
    let mut text = String::new();
    if let Err(e) = file.take(MAX_IGNORE_FILE).read_to_string(&mut text) {
        tracing::warn!(file = %path.display(), error = %e, "cannot read an .iwantignore");
        return None;
    }
    let mut b = GitignoreBuilder::new(&dir_abs);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    for line in &lines {
        if let Err(e) = b.add_line(Some(path.clone()), line) {
            tracing::warn!(file = %path.display(), error = %e, "ignoring an invalid .iwantignore line");
        }
    }
    match b.build() {
        Ok(g) => Some((g, lines)),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "an invalid .iwantignore");
            None
        }
    }
}

/// Whether the platform marks the entry hidden (Windows' hidden attribute).
fn hidden_attribute(meta: &Metadata) -> bool {
    #[cfg(windows)]
    {
        use std::os::windows::fs::MetadataExt;
        const FILE_ATTRIBUTE_HIDDEN: u32 = 0x2;
        meta.file_attributes() & FILE_ATTRIBUTE_HIDDEN != 0
    }
    #[cfg(not(windows))]
    {
        let _ = meta;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(rules: &Rules, root: &Path, rel: &str) -> Option<String> {
        let meta = fs::symlink_metadata(super::super::scan::native(root, rel)).unwrap();
        rules.walker(root).skip(rel, &meta)
    }

    fn touch(root: &Path, rel: &str) {
        let p = super::super::scan::native(root, rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn every_builtin_secret_is_skipped_even_with_hidden_files_included() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let names = [
            "a/id_rsa",
            "id_ed25519",
            "k/id_ecdsa",
            "id_dsa",
            "id_ed25519_sk",
            "x.ppk",
            "cert.pem",
            "identity.key",
            "store.p12",
            "w.pfx",
            "j.jks",
            "a.keystore",
            "p.kdbx",
            ".env",
            ".env.local",
            ".netrc",
            "_netrc",
            ".pgpass",
            ".git-credentials",
            ".npmrc",
            ".pypirc",
            ".docker/config.json",
            "secring.gpg",
            "login.keychain-db",
            "wallet.dat",
            "deep/er/wallet.dat",
            ".iwantignore",
            ".bash_history",
            ".zsh_history",
            ".python_history",
            ".psql_history",
            ".zhistory",
            ".local/share/fish/fish_history",
        ];
        let dirs = [
            ".ssh",
            ".gnupg",
            ".aws",
            ".azure",
            ".kube",
            ".config/gcloud",
            ".password-store",
            "Library/Keychains",
            ".mozilla",
            ".thunderbird",
            ".config/google-chrome",
            ".config/chromium",
            ".config/BraveSoftware",
            "Library/Application Support/Google/Chrome",
            "Library/Application Support/Firefox",
            "AppData/Local/Google/Chrome",
            "AppData/Roaming/Mozilla",
            ".bitcoin",
            ".ethereum",
            ".electrum",
            "eth/keystore",
        ];
        for n in names {
            touch(&root, n);
        }
        for d in dirs {
            fs::create_dir_all(super::super::scan::native(&root, d)).unwrap();
        }
        let rules = Rules::new(true, &["!*".into()], None);
        for n in names.iter().chain(dirs.iter()) {
            let r = reason(&rules, &root, n).unwrap_or_default();
            assert!(r.starts_with("secret: "), "{n}: {r:?}");
        }
        assert_eq!(
            reason(&rules, &root, "id_ed25519").unwrap(),
            "secret: SSH private key (id_*)"
        );
        // Public keys and ordinary names are not secrets.
        touch(&root, "id_ed25519.pub");
        touch(&root, "notes.txt");
        touch(&root, "keys.md");
        touch(&root, "my_history.txt");
        for n in ["id_ed25519.pub", "notes.txt", "keys.md", "my_history.txt"] {
            assert_eq!(reason(&rules, &root, n), None, "{n}");
        }
    }

    #[test]
    fn hidden_entries_are_skipped_unless_included() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        touch(&root, ".config/app.conf");
        touch(&root, ".profile");
        let off = Rules::new(false, &[], None);
        assert_eq!(reason(&off, &root, ".config").as_deref(), Some("hidden"));
        assert_eq!(reason(&off, &root, ".profile").as_deref(), Some("hidden"));
        let on = Rules::new(true, &[], None);
        assert_eq!(reason(&on, &root, ".config"), None);
        assert_eq!(reason(&on, &root, ".config/app.conf"), None);
        assert_eq!(reason(&on, &root, ".profile"), None);
    }

    #[test]
    fn config_patterns_add_skips_but_cannot_unskip_hidden_or_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        touch(&root, "a/disk.iso");
        touch(&root, "private/x.txt");
        touch(&root, "keep.txt");
        touch(&root, ".hidden");
        touch(&root, "k.pem");
        let rules = Rules::new(
            false,
            &[
                "*.iso".into(),
                "private/".into(),
                "!.hidden".into(),
                "!k.pem".into(),
            ],
            None,
        );
        assert_eq!(
            reason(&rules, &root, "a/disk.iso").as_deref(),
            Some("config ignore: *.iso")
        );
        assert_eq!(
            reason(&rules, &root, "private").as_deref(),
            Some("config ignore: private/")
        );
        assert_eq!(reason(&rules, &root, "keep.txt"), None);
        assert_eq!(reason(&rules, &root, ".hidden").as_deref(), Some("hidden"));
        assert!(reason(&rules, &root, "k.pem")
            .unwrap()
            .starts_with("secret"));
    }

    #[test]
    fn nested_iwantignore_files_apply_below_their_folder_and_deeper_ones_override() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::write(root.join(".iwantignore"), "# comment\n*.tmp\nbuild/\n").unwrap();
        touch(&root, "a.tmp");
        touch(&root, "sub/b.tmp");
        touch(&root, "sub/keep.tmp");
        touch(&root, "sub/build/o");
        touch(&root, "other/c.tmp");
        fs::write(root.join("sub/.iwantignore"), "!keep.tmp\n").unwrap();
        touch(&root, "ok.txt");
        let rules = Rules::new(false, &[], None);
        assert_eq!(
            reason(&rules, &root, "a.tmp").as_deref(),
            Some(".iwantignore line 2: *.tmp")
        );
        assert_eq!(
            reason(&rules, &root, "sub/b.tmp").as_deref(),
            Some(".iwantignore line 2: *.tmp")
        );
        assert_eq!(reason(&rules, &root, "sub/keep.tmp"), None);
        assert_eq!(
            reason(&rules, &root, "sub/build").as_deref(),
            Some(".iwantignore line 3: build/")
        );
        assert_eq!(reason(&rules, &root, "ok.txt"), None);
        // The negation only holds in its own folder.
        touch(&root, "other/keep.tmp");
        assert!(reason(&rules, &root, "other/keep.tmp").is_some());
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_named_iwantignore_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        touch(&root, "keep.txt");
        let fifo =
            std::ffi::CString::new(root.join(IGNORE_FILE).as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rules = Rules::new(false, &[], None);
            let _ = tx.send(reason(&rules, &root, "keep.txt"));
        });
        let skipped = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("reading a FIFO named .iwantignore blocked");
        assert_eq!(skipped, None);
    }

    #[test]
    fn the_node_home_is_skipped_by_its_canonical_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("home")).unwrap();
        fs::write(root.join("home/iwant.db"), b"x").unwrap();
        let rules = Rules::new(false, &[], Some(&root.join("home")));
        assert_eq!(reason(&rules, &root, "home").as_deref(), Some(HOME_REASON));
        assert!(rules.in_home(&root.join("home/iwant.db")));
        assert!(!rules.in_home(&root.join("homework")));
    }
}
