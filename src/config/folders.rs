//! The rules for the two folders: what may be shared and downloaded into.
//!
//! One function per moment a folder is chosen:
//!
//! - [`change_folder`]: `iwant share` / `iwant download-to`, by the CLI (node not running) or
//!   by the running node. Every rule applies; `--force` lifts the rules a user may knowingly
//!   override, `--create` allows a missing folder to be created.
//! - [`folders_at_start`]: the node starting on a saved config. The rules nobody may override
//!   are checked again (the file can be edited by hand), the overridable ones are not (the user
//!   passed `--force` once); a missing shared folder is left missing (an unmounted disk must
//!   not be replaced by an empty folder), a missing download folder is created.
//!
//! The rules, in the order they are checked:
//!
//! 1. A literal `~` in the path: the shell did not expand it. Refused.
//! 2. A file, or a path through a file: refused.
//! 3. Never, not even with `--force`: the root of the file system, a system folder (see
//!    [`Places::system`]), the node's own home (its key and database).
//! 4. Only with `--force`: the user's whole home folder (for both roles), and as the shared
//!    folder, a folder containing the user's home or the node's home. A folder *inside* the
//!    node's home is fine (that is where `--home` puts the default folders).
//! 5. The two folders differ and are not nested in each other.
//! 6. Missing: refused unless `--create`.

use std::{
    fmt, fs,
    path::{Component, Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Which of the two folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The shared folder.
    Shared,
    /// The download folder.
    Download,
}

impl Role {
    /// The other folder's role.
    fn other(self) -> Role {
        match self {
            Role::Shared => Role::Download,
            Role::Download => Role::Shared,
        }
    }

    /// What the user does with a folder of this role: "share", "download into".
    fn verb(self) -> &'static str {
        match self {
            Role::Shared => "share",
            Role::Download => "download into",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Shared => "shared",
            Role::Download => "download",
        })
    }
}

/// What the user allowed for one folder change (`--force`, `--create`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderChange {
    /// Allow the folders only `--force` allows (the user's home, a folder containing it).
    #[serde(default)]
    pub force: bool,
    /// Create the folder if it does not exist.
    #[serde(default)]
    pub create: bool,
}

/// A violation of the folder rules. Every message names the folder as given and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FolderError {
    /// Both folders are the same.
    #[error("the shared folder {shared} and the download folder {download} are the same folder; they must differ")]
    Same {
        /// The shared folder as given.
        shared: PathBuf,
        /// The download folder as given.
        download: PathBuf,
    },
    /// One folder is inside the other.
    #[error("the {inner_role} folder {inner} is inside the {outer_role} folder {outer}; the two folders may not be nested")]
    Nested {
        /// The role of the folder inside the other.
        inner_role: Role,
        /// The folder inside the other.
        inner: PathBuf,
        /// The role of the folder that contains the other.
        outer_role: Role,
        /// The folder that contains the other.
        outer: PathBuf,
    },
    /// The path has a `~` component: the shell did not expand it.
    #[error("the {role} folder {path} has a literal `~` in it: the shell did not expand it (it was quoted); type the path without quotes, or write your home folder out in full")]
    Tilde {
        /// Which folder.
        role: Role,
        /// The folder as given.
        path: PathBuf,
    },
    /// The path is a file, or goes through one.
    #[error("the {role} folder {path} cannot be used: {file} is a file, not a folder; {verb} the folder that holds it", verb = role.verb())]
    NotAFolder {
        /// Which folder.
        role: Role,
        /// The folder as given.
        path: PathBuf,
        /// The file: the path itself or one of its parents.
        file: PathBuf,
    },
    /// A folder that may never be used.
    #[error("the {role} folder {path} {why}; iwant does not {verb} it, not even with --force", verb = role.verb())]
    Never {
        /// Which folder.
        role: Role,
        /// The folder as given.
        path: PathBuf,
        /// Why, e.g. "is the root of the file system".
        why: String,
    },
    /// A folder that only `--force` allows.
    #[error("the {role} folder {path} {why}; choose a folder for just what you mean to {verb}, or pass --force if you really mean it", verb = role.verb())]
    NeedsForce {
        /// Which folder.
        role: Role,
        /// The folder as given.
        path: PathBuf,
        /// Why, e.g. "is your whole home folder".
        why: String,
    },
    /// The folder does not exist and `--create` was not given.
    #[error("the {role} folder {path} does not exist; create it first or pass --create")]
    Missing {
        /// Which folder.
        role: Role,
        /// The folder as given.
        path: PathBuf,
    },
    /// The folder cannot be read, resolved or created.
    #[error("the {role} folder {path} cannot be used: {reason}")]
    Unusable {
        /// Which folder.
        role: Role,
        /// The folder as given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The two folders after the rules were checked: absolute and canonical (a missing shared
/// folder at start is canonical up to its deepest existing parent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folders {
    /// The shared folder.
    pub shared_dir: PathBuf,
    /// The download folder.
    pub download_dir: PathBuf,
}

impl Folders {
    fn get(&self, role: Role) -> &Path {
        match role {
            Role::Shared => &self.shared_dir,
            Role::Download => &self.download_dir,
        }
    }

    fn set(&mut self, role: Role, path: PathBuf) {
        match role {
            Role::Shared => self.shared_dir = path,
            Role::Download => self.download_dir = path,
        }
    }
}

/// A system folder no folder may be, and whether folders inside it are refused as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemFolder {
    /// The folder, canonical.
    pub path: PathBuf,
    /// Whether everything inside it is refused too (else only the folder itself).
    pub inside: bool,
}

/// The places the rules protect, resolved once.
#[derive(Debug, Clone)]
pub struct Places {
    /// The node's home (canonical when it exists).
    pub node_home: PathBuf,
    /// The user's home folder, if known.
    pub user_home: Option<PathBuf>,
    /// The system folders of this platform ([`system_folders`]).
    pub system: Vec<SystemFolder>,
}

impl Places {
    /// The places of this machine for a node whose home is `node_home`.
    pub fn of(node_home: &Path) -> Self {
        Self {
            node_home: canonical_or_given(node_home),
            user_home: directories::BaseDirs::new().map(|d| canonical_or_given(d.home_dir())),
            system: system_folders(),
        }
    }
}

fn canonical_or_given(path: &Path) -> PathBuf {
    dunce::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// This platform's system folders.
pub fn system_folders() -> Vec<SystemFolder> {
    let folder = |path: &str, inside| SystemFolder {
        path: PathBuf::from(path),
        inside,
    };
    #[cfg(target_os = "macos")]
    {
        // `/etc`, `/var` and `/tmp` are links into `/private`: the rules see canonical paths.
        [
            ("/System", true),
            ("/bin", true),
            ("/sbin", true),
            ("/usr", true),
            ("/dev", true),
            ("/private/etc", true),
            ("/private/var/db", true),
            ("/cores", true),
            ("/Library", false),
            ("/Applications", false),
            ("/private", false),
            ("/private/var", false),
        ]
        .into_iter()
        .map(|(p, inside)| folder(p, inside))
        .collect()
    }
    #[cfg(windows)]
    {
        let _ = folder;
        let mut folders = Vec::new();
        for (var, fallback) in [
            ("SystemRoot", Some(r"C:\Windows")),
            ("ProgramFiles", Some(r"C:\Program Files")),
            ("ProgramFiles(x86)", None),
            ("ProgramW6432", None),
            ("ProgramData", Some(r"C:\ProgramData")),
        ] {
            let path = std::env::var_os(var)
                .map(PathBuf::from)
                .or_else(|| fallback.map(PathBuf::from));
            if let Some(path) = path {
                folders.push(SystemFolder {
                    path: canonical_or_given(&path),
                    inside: true,
                });
            }
        }
        folders
    }
    #[cfg(all(unix, not(target_os = "macos")))]
    {
        // Inside `/var` and `/run` live folders people do share (`/var/www`, disks mounted
        // under `/run/media`): only the folders themselves are refused.
        [
            ("/proc", true),
            ("/sys", true),
            ("/dev", true),
            ("/etc", true),
            ("/boot", true),
            ("/bin", true),
            ("/sbin", true),
            ("/lib", true),
            ("/lib32", true),
            ("/lib64", true),
            ("/libx32", true),
            ("/usr", true),
            ("/var", false),
            ("/run", false),
        ]
        .into_iter()
        .map(|(p, inside)| folder(p, inside))
        .collect()
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = folder;
        Vec::new()
    }
}

/// Paths as the file system compares them: case-insensitively on Windows and macOS, and on
/// Windows without the verbatim prefix a canonical path over MAX_PATH keeps.
fn folded(path: &Path) -> PathBuf {
    if cfg!(any(windows, target_os = "macos")) {
        PathBuf::from(fold(&path.to_string_lossy(), cfg!(windows)))
    } else {
        path.to_path_buf()
    }
}

/// Lower case; with `windows`, `\\?\C:\x` as `c:\x` and `\\?\UNC\srv\x` as `\\srv\x`
/// (the same folders: canonicalising keeps the prefix only where a path is over MAX_PATH).
fn fold(path: &str, windows: bool) -> String {
    let lower = path.to_lowercase();
    if !windows {
        return lower;
    }
    if let Some(rest) = lower.strip_prefix(r"\\?\unc\") {
        format!(r"\\{rest}")
    } else if let Some(rest) = lower.strip_prefix(r"\\?\") {
        rest.to_owned()
    } else {
        lower
    }
}

/// Whether `path` is `base` or inside it, as the file system compares.
fn within(path: &Path, base: &Path) -> bool {
    folded(path).starts_with(folded(base))
}

fn same(a: &Path, b: &Path) -> bool {
    folded(a) == folded(b)
}

/// A path resolved as far as it exists.
struct Resolved {
    /// Canonical up to its deepest existing ancestor, the rest appended lexically.
    path: PathBuf,
    exists: bool,
}

/// Resolves `given` (absolute): follows links in the part that exists, normalises the rest.
fn resolve(role: Role, given: &Path) -> Result<Resolved, FolderError> {
    let unusable = |reason: String| FolderError::Unusable {
        role,
        path: given.to_path_buf(),
        reason,
    };
    if !given.is_absolute() {
        return Err(unusable("the path is not absolute".into()));
    }
    if given
        .components()
        .any(|c| matches!(c, Component::Normal(n) if n == "~"))
    {
        return Err(FolderError::Tilde {
            role,
            path: given.to_path_buf(),
        });
    }
    let not_a_folder = |file: &Path| FolderError::NotAFolder {
        role,
        path: given.to_path_buf(),
        file: file.to_path_buf(),
    };
    for ancestor in given.ancestors() {
        let Ok(link) = fs::symlink_metadata(ancestor) else {
            continue;
        };
        let canonical = dunce::canonicalize(ancestor)
            .map_err(|e| unusable(format!("cannot resolve {}: {e}", ancestor.display())))?;
        let meta = fs::metadata(&canonical).unwrap_or(link);
        if !meta.is_dir() {
            return Err(not_a_folder(ancestor));
        }
        let rest = given.strip_prefix(ancestor).unwrap_or(Path::new(""));
        let mut path = canonical;
        for component in rest.components() {
            match component {
                Component::ParentDir => {
                    path.pop();
                }
                Component::Normal(name) => path.push(name),
                _ => {}
            }
        }
        // `missing/..` leads back into what exists.
        let exists = fs::metadata(&path).is_ok_and(|m| m.is_dir());
        return Ok(Resolved { path, exists });
    }
    Err(unusable("no part of the path exists".into()))
}

/// The rules nobody may override (3).
fn check_never(role: Role, given: &Path, path: &Path, places: &Places) -> Result<(), FolderError> {
    let never = |why: String| FolderError::Never {
        role,
        path: given.to_path_buf(),
        why,
    };
    if path.parent().is_none() {
        return Err(never("is the root of the file system".into()));
    }
    if same(path, &places.node_home) {
        return Err(never(
            "is this node's own home: it holds the node's key and database".into(),
        ));
    }
    for system in &places.system {
        if same(path, &system.path) {
            return Err(never(format!(
                "is the system folder {}",
                system.path.display()
            )));
        }
        if system.inside && within(path, &system.path) {
            return Err(never(format!(
                "is inside the system folder {}",
                system.path.display()
            )));
        }
    }
    Ok(())
}

/// The rules `--force` lifts (4).
fn check_force(role: Role, given: &Path, path: &Path, places: &Places) -> Result<(), FolderError> {
    let needs_force = |why: String| FolderError::NeedsForce {
        role,
        path: given.to_path_buf(),
        why,
    };
    if let Some(me) = &places.user_home {
        if same(path, me) {
            return Err(needs_force(
                "is your whole home folder: keys, browser profiles and histories live there".into(),
            ));
        }
        if role == Role::Shared && within(me, path) {
            return Err(needs_force(format!(
                "contains your home folder {}",
                me.display()
            )));
        }
    }
    if role == Role::Shared && within(&places.node_home, path) {
        return Err(needs_force(format!(
            "contains this node's home {} (its key and database are never shared, but everything else there is)",
            places.node_home.display()
        )));
    }
    Ok(())
}

/// The two folders differ and are not nested (6). Paths are resolved; `given` names them.
fn check_pair(resolved: &Folders, given: &Folders) -> Result<(), FolderError> {
    let (shared, download) = (&resolved.shared_dir, &resolved.download_dir);
    if same(shared, download) {
        return Err(FolderError::Same {
            shared: given.shared_dir.clone(),
            download: given.download_dir.clone(),
        });
    }
    let nested = |inner_role, outer_role| FolderError::Nested {
        inner_role,
        inner: given.get(inner_role).to_path_buf(),
        outer_role,
        outer: given.get(outer_role).to_path_buf(),
    };
    if within(download, shared) {
        return Err(nested(Role::Download, Role::Shared));
    }
    if within(shared, download) {
        return Err(nested(Role::Shared, Role::Download));
    }
    Ok(())
}

/// The other folder as it stands, resolved as far as possible (it may be missing or broken;
/// only the pair rules look at it).
fn resolve_loosely(role: Role, path: &Path) -> PathBuf {
    resolve(role, path)
        .map(|r| r.path)
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Changes the `role` folder of `current` to `path` (absolute, as the user gave it) under every
/// rule, creating it when `change.create` allows. Returns both folders, canonical.
pub fn change_folder(
    current: &Folders,
    role: Role,
    path: &Path,
    change: FolderChange,
    places: &Places,
) -> Result<Folders, FolderError> {
    let resolved = resolve(role, path)?;
    check_never(role, path, &resolved.path, places)?;
    if !change.force {
        check_force(role, path, &resolved.path, places)?;
    }
    let mut given = current.clone();
    given.set(role, path.to_path_buf());
    let other = role.other();
    let mut folders = Folders {
        shared_dir: PathBuf::new(),
        download_dir: PathBuf::new(),
    };
    folders.set(role, resolved.path.clone());
    folders.set(other, resolve_loosely(other, current.get(other)));
    check_pair(&folders, &given)?;
    // Last: where --create would not help, the message says what would.
    if !resolved.exists && !change.create {
        return Err(FolderError::Missing {
            role,
            path: path.to_path_buf(),
        });
    }
    if !resolved.exists {
        let created = create(role, path, &resolved.path)?;
        // As it is now on disk: a link made meanwhile must not lead anywhere the rules refuse.
        check_never(role, path, &created, places)?;
        folders.set(role, created);
    }
    Ok(folders)
}

/// Creates `resolved`, the folder `given` names, and resolves it again as it is on disk.
fn create(role: Role, given: &Path, resolved: &Path) -> Result<PathBuf, FolderError> {
    fs::create_dir_all(resolved).map_err(|e| FolderError::Unusable {
        role,
        path: given.to_path_buf(),
        reason: format!("cannot create it: {e}"),
    })?;
    resolve(role, given).map(|r| r.path)
}

/// The folders a node starts with, and what it had to do about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFolders {
    /// Both folders, canonical as far as they exist.
    pub folders: Folders,
    /// The shared folder does not exist and was not created (an unmounted disk?).
    pub shared_missing: bool,
    /// The download folder did not exist and was created.
    pub download_created: bool,
}

/// Checks the saved folders when a node starts (see the module docs): the rules nobody may
/// override, the pair rules; creates the download folder if missing, and the shared folder
/// only with `create_shared` (the node's default folder, which a new user never made).
pub fn folders_at_start(
    saved: &Folders,
    create_shared: bool,
    places: &Places,
) -> Result<StartFolders, FolderError> {
    let shared = resolve(Role::Shared, &saved.shared_dir)?;
    check_never(Role::Shared, &saved.shared_dir, &shared.path, places)?;
    let download = resolve(Role::Download, &saved.download_dir)?;
    check_never(Role::Download, &saved.download_dir, &download.path, places)?;
    let mut folders = Folders {
        shared_dir: shared.path,
        download_dir: download.path,
    };
    check_pair(&folders, saved)?;
    let mut shared_missing = !shared.exists;
    if shared_missing && create_shared {
        folders.shared_dir = create(Role::Shared, &saved.shared_dir, &folders.shared_dir)?;
        shared_missing = false;
    }
    let download_created = !download.exists;
    if download_created {
        folders.download_dir = create(Role::Download, &saved.download_dir, &folders.download_dir)?;
    }
    Ok(StartFolders {
        folders,
        shared_missing,
        download_created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths_compare_with_and_without_the_verbatim_prefix() {
        assert_eq!(
            fold(r"\\?\C:\Users\Ann\Shared", true),
            r"c:\users\ann\shared"
        );
        assert_eq!(fold(r"C:\Users\Ann", true), r"c:\users\ann");
        assert_eq!(fold(r"\\?\UNC\nas\films", true), r"\\nas\films");
        assert_eq!(fold(r"\\nas\films", true), r"\\nas\films");
        // macOS folds case only.
        assert_eq!(fold("/Users/Ann/Shared", false), "/users/ann/shared");
    }

    /// A scratch machine: `root/users/me` is the user's home, `root/apps/h` the node's, and
    /// `root/sys` a system folder refused with what is inside, `root/open` one refused alone.
    struct Machine {
        _dir: tempfile::TempDir,
        root: PathBuf,
        places: Places,
    }

    impl Machine {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().canonicalize().unwrap();
            for d in ["users/me", "apps/h", "sys/inner", "open/inner", "a", "b"] {
                fs::create_dir_all(root.join(d)).unwrap();
            }
            let places = Places {
                node_home: root.join("apps/h"),
                user_home: Some(root.join("users/me")),
                system: vec![
                    SystemFolder {
                        path: root.join("sys"),
                        inside: true,
                    },
                    SystemFolder {
                        path: root.join("open"),
                        inside: false,
                    },
                ],
            };
            Self {
                _dir: dir,
                root,
                places,
            }
        }

        fn current(&self) -> Folders {
            Folders {
                shared_dir: self.root.join("a"),
                download_dir: self.root.join("b"),
            }
        }

        fn share(&self, path: &Path, force: bool, create: bool) -> Result<Folders, FolderError> {
            change_folder(
                &self.current(),
                Role::Shared,
                path,
                FolderChange { force, create },
                &self.places,
            )
        }
    }

    #[test]
    fn the_file_system_root_system_folders_and_the_node_home_are_never_allowed() {
        let m = Machine::new();
        let cases = [
            (PathBuf::from("/"), "is the root of the file system"),
            (m.root.join("sys"), "is the system folder"),
            (m.root.join("sys/inner"), "is inside the system folder"),
            (m.root.join("open"), "is the system folder"),
            (m.root.join("apps/h"), "is this node's own home"),
            (m.root.join("apps/h/../h/."), "is this node's own home"),
        ];
        for (path, says) in cases {
            let err = m.share(&path, true, true).unwrap_err();
            assert!(matches!(err, FolderError::Never { .. }), "{err}");
            assert!(err.to_string().contains(says), "{err}");
            assert!(err.to_string().contains("not even with --force"), "{err}");
        }
        // Inside a folder refused alone, and inside the node's home: allowed.
        m.share(&m.root.join("open/inner"), false, false).unwrap();
        let inside = m.share(&m.root.join("apps/h/shared"), false, true).unwrap();
        assert_eq!(inside.shared_dir, m.root.join("apps/h/shared"));
    }

    #[test]
    fn the_users_home_and_folders_containing_a_home_need_force() {
        let m = Machine::new();
        for (path, says) in [
            (m.root.join("users/me"), "is your whole home folder"),
            (m.root.join("users"), "contains your home folder"),
            (m.root.join("apps"), "contains this node's home"),
        ] {
            let err = m.share(&path, false, false).unwrap_err();
            assert!(matches!(err, FolderError::NeedsForce { .. }), "{err}");
            assert!(err.to_string().contains(says), "{err}");
            assert!(err.to_string().contains("pass --force"), "{err}");
            let folders = m.share(&path, true, false).unwrap();
            assert_eq!(folders.shared_dir, path);
        }
        // As the download folder, only the whole home needs --force.
        let download = |path: &Path, force| {
            change_folder(
                &m.current(),
                Role::Download,
                path,
                FolderChange {
                    force,
                    create: false,
                },
                &m.places,
            )
        };
        assert!(matches!(
            download(&m.root.join("users/me"), false),
            Err(FolderError::NeedsForce { .. })
        ));
        download(&m.root.join("users/me"), true).unwrap();
        download(&m.root.join("apps"), false).unwrap();
        download(&m.root.join("users/me/Downloads/../"), true).unwrap();
    }

    #[test]
    fn a_missing_folder_is_created_only_with_create_and_only_when_every_rule_passes() {
        let m = Machine::new();
        let deep = m.root.join("new/deep/folder");
        let err = m.share(&deep, false, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the shared folder {} does not exist; create it first or pass --create",
                deep.display()
            )
        );
        assert!(!m.root.join("new").exists());
        // Nested in the download folder: refused before anything is created.
        let nested = m.root.join("b/new/inner");
        let err = m.share(&nested, false, true).unwrap_err();
        assert!(matches!(err, FolderError::Nested { .. }), "{err}");
        assert!(!m.root.join("b/new").exists());
        // Refused for a rule: nothing created either.
        let err = m.share(&m.root.join("sys/new"), true, true).unwrap_err();
        assert!(matches!(err, FolderError::Never { .. }), "{err}");
        assert!(!m.root.join("sys/new").exists());
        let folders = m.share(&deep, false, true).unwrap();
        assert_eq!(folders.shared_dir, deep);
        assert!(deep.is_dir());
    }

    #[test]
    fn a_literal_tilde_is_refused_with_a_hint() {
        let m = Machine::new();
        for path in [
            m.root.join("~/Public"),
            m.root.join("~"),
            m.root.join("x/~/y"),
        ] {
            let err = m.share(&path, true, true).unwrap_err();
            assert!(matches!(err, FolderError::Tilde { .. }), "{err}");
            assert!(err.to_string().contains("without quotes"), "{err}");
        }
        assert!(!m.root.join("~").exists());
        // A name that merely holds a `~` is fine.
        m.share(&m.root.join("a~b"), false, true).unwrap();
    }

    #[test]
    fn a_file_is_named_with_what_to_do() {
        let m = Machine::new();
        let file = m.root.join("notes.txt");
        fs::write(&file, b"x").unwrap();
        let err = m.share(&file, false, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the shared folder {0} cannot be used: {0} is a file, not a folder; share the folder that holds it",
                file.display()
            )
        );
        let below = file.join("below");
        let err = change_folder(
            &m.current(),
            Role::Download,
            &below,
            FolderChange {
                force: false,
                create: true,
            },
            &m.places,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "{} is a file, not a folder; download into the folder that holds it",
                file.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn same_and_nested_folders_are_refused_naming_both() {
        let m = Machine::new();
        let err = m.share(&m.root.join("b"), false, false).unwrap_err();
        assert!(matches!(err, FolderError::Same { .. }), "{err}");
        let err = m.share(&m.root.join("b/../b/"), false, false).unwrap_err();
        assert!(matches!(err, FolderError::Same { .. }), "{err}");
        fs::create_dir(m.root.join("b/in")).unwrap();
        let err = m.share(&m.root.join("b/in"), false, false).unwrap_err();
        assert_eq!(
            err,
            FolderError::Nested {
                inner_role: Role::Shared,
                inner: m.root.join("b/in"),
                outer_role: Role::Download,
                outer: m.root.join("b"),
            }
        );
        let err = m.share(&m.root, true, false).unwrap_err();
        assert!(
            matches!(
                err,
                FolderError::Nested {
                    inner_role: Role::Download,
                    ..
                }
            ),
            "{err}"
        );
        // Siblings with a common prefix are not nested.
        m.share(&m.root.join("b-2"), false, true).unwrap();
    }

    #[test]
    fn at_start_a_missing_shared_folder_stays_missing_and_a_download_folder_is_created() {
        let m = Machine::new();
        let saved = Folders {
            shared_dir: m.root.join("disk/share"),
            download_dir: m.root.join("dl/new"),
        };
        let start = folders_at_start(&saved, false, &m.places).unwrap();
        assert!(start.shared_missing && start.download_created);
        assert!(!m.root.join("disk").exists());
        assert!(m.root.join("dl/new").is_dir());
        assert_eq!(start.folders, saved);
        // The default shared folder is created.
        let first = Folders {
            shared_dir: m.root.join("apps/h/shared"),
            download_dir: m.root.join("apps/h/downloads"),
        };
        let start = folders_at_start(&first, true, &m.places).unwrap();
        assert!(!start.shared_missing);
        assert!(first.shared_dir.is_dir() && first.download_dir.is_dir());
    }

    #[test]
    fn at_start_only_the_rules_nobody_may_override_apply() {
        let m = Machine::new();
        let with = |shared: PathBuf| Folders {
            shared_dir: shared,
            download_dir: m.root.join("b"),
        };
        // Allowed once with --force: still allowed.
        folders_at_start(&with(m.root.join("users/me")), false, &m.places).unwrap();
        for bad in [
            m.root.join("apps/h"),
            m.root.join("sys/inner"),
            PathBuf::from("/"),
        ] {
            let err = folders_at_start(&with(bad), false, &m.places).unwrap_err();
            assert!(matches!(err, FolderError::Never { .. }), "{err}");
        }
        let err = folders_at_start(&with(m.root.join("b/x")), false, &m.places).unwrap_err();
        assert!(matches!(err, FolderError::Nested { .. }), "{err}");
        assert!(!m.root.join("b/x").exists());
    }

    #[cfg(all(unix, not(target_os = "macos")))]
    #[test]
    fn the_linux_system_folders_are_refused_but_not_what_people_share_under_var_and_run() {
        let places = Places {
            node_home: PathBuf::from("/nonexistent/home"),
            user_home: None,
            system: system_folders(),
        };
        let check = |p: &str| check_never(Role::Shared, Path::new(p), Path::new(p), &places);
        for p in [
            "/proc",
            "/sys/kernel",
            "/etc",
            "/usr/share",
            "/var",
            "/run",
            "/dev/shm",
        ] {
            assert!(check(p).is_err(), "{p}");
        }
        for p in [
            "/var/www",
            "/run/media/me/disk",
            "/srv/files",
            "/tmp/x",
            "/mnt/usb",
        ] {
            assert!(check(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn a_change_travels_with_defaults_for_old_clients() {
        let change: FolderChange = serde_json::from_str("{}").unwrap();
        assert_eq!(change, FolderChange::default());
    }
}
