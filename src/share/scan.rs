//! Walking the shared folder: what is there, by relative path, without reading file contents.

use std::{
    fs::{self, Metadata},
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use super::ignore::{Rules, HOME_REASON};
use crate::store::ScanError;
pub use crate::store::Stamp;

/// Files whose name ends like this are downloads in progress and never indexed.
pub const PARTIAL_SUFFIX: &str = ".iwant-part";

/// A regular file found by a walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    /// Path relative to the share root, `/`-separated.
    pub path: String,
    /// The version the walk saw.
    pub stamp: Stamp,
}

/// What a walk of a subtree found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Regular files (and symlinks to files inside the share).
    pub files: Vec<FoundFile>,
    /// Directories, the walked one included when it is a directory.
    pub dirs: Vec<String>,
    /// Entries that cannot be indexed, with the reason.
    pub errors: Vec<ScanError>,
    /// Entries left out on purpose by the [`Rules`], with the rule; a skipped directory is one
    /// entry (it is not descended).
    pub skipped: Vec<ScanError>,
    /// Directories that could not be listed (also in `errors`): unreadable ones, typically.
    pub unlisted: Vec<String>,
    /// Paths whose contents the walk could not see (also in `errors`): a directory it could
    /// not list or listed only in part, an entry it could not stat (a permission, an I/O error,
    /// no file descriptor left). Not seeing something is not seeing it gone: the index keeps
    /// its rows at and below these paths until a walk sees them.
    pub unreadable: Vec<String>,
    /// The walk was told to stop before it finished: what it found is incomplete and must not
    /// be taken for the folder's contents.
    pub interrupted: bool,
}

/// The `/`-separated form of `rel`, or `None` if a component is not UTF-8.
pub fn rel_string(rel: &Path) -> Option<String> {
    let mut out = String::new();
    for c in rel.components() {
        let s = c.as_os_str().to_str()?;
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(s);
    }
    Some(out)
}

/// The native path of a `/`-separated relative path under `root`.
pub fn native(root: &Path, rel: &str) -> PathBuf {
    let mut p = root.to_path_buf();
    if !rel.is_empty() {
        p.extend(rel.split('/'));
    }
    p
}

impl Stamp {
    /// The stamp of a file's metadata. On Windows, std gives no change time, file index or
    /// volume serial number yet: those stay 0 and `None` there.
    pub fn of(meta: &Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
            ctime_ns: ctime_ns(meta),
            inode: inode(meta),
            dev: dev(meta),
        }
    }
}

/// Status change time in nanoseconds since the Unix epoch; 0 where the platform has none.
pub fn ctime_ns(meta: &Metadata) -> i64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.ctime_nsec())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        0
    }
}

/// The device the file is on, where the platform says.
pub fn dev(meta: &Metadata) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(meta.dev())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Modification time in nanoseconds since the Unix epoch (negative before it).
pub fn mtime_ns(meta: &Metadata) -> i64 {
    match meta.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        },
        Err(_) => 0,
    }
}

/// The inode number, where there is one.
pub fn inode(meta: &Metadata) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Walks `rel` (a file or directory, "" for the whole share) under `root`. Missing `rel` gives
/// an empty walk. Symlinks are followed only to files inside the share; directory symlinks are
/// not followed (no cycles, no escape). Sockets, fifos and devices are skipped. What the
/// `rules` leave out is listed in [`Walk::skipped`]; below a skipped folder nothing is walked.
pub fn walk(root: &Path, rel: &str, rules: &Rules) -> Walk {
    walk_until(root, rel, rules, &|| false)
}

/// [`walk`], giving up (with [`Walk::interrupted`] set) as soon as `stop` says so; it is asked
/// before every entry, so a walk of a huge or slow tree ends within one `stat` or `read_dir`.
pub fn walk_until(root: &Path, rel: &str, rules: &Rules, stop: &dyn Fn() -> bool) -> Walk {
    let mut walk = Walk::default();
    let mut walker = rules.walker(root);
    if walker.ancestor_skipped(rel) {
        return walk;
    }
    // The root in std's canonical form, the form link targets come in (on Windows always the
    // `\\?\` one); made at the first link of the walk.
    let canonical_root = std::cell::OnceCell::new();
    let mut stack = vec![rel.to_string()];
    while let Some(rel) = stack.pop() {
        if stop() {
            walk.interrupted = true;
            break;
        }
        let abs = native(root, &rel);
        let meta = match fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                walk.errors.push(error(&rel, e));
                walk.unreadable.push(rel);
                continue;
            }
        };
        if !rel.is_empty() {
            if let Some(reason) = walker.skip(&rel, &meta) {
                walk.skipped.push(ScanError { path: rel, reason });
                continue;
            }
        }
        let meta = if meta.file_type().is_symlink() {
            let root = canonical_root.get_or_init(|| fs::canonicalize(root).ok());
            match root.as_deref().and_then(|root| resolve_link(root, &abs)) {
                Some((target, _)) if rules.in_home(&target) => {
                    walk.skipped.push(ScanError {
                        path: rel,
                        reason: HOME_REASON.into(),
                    });
                    continue;
                }
                Some((_, m)) => m,
                None => continue,
            }
        } else {
            meta
        };
        if meta.is_dir() {
            let entries = match fs::read_dir(&abs) {
                Ok(e) => e,
                Err(e) => {
                    walk.errors.push(error(&rel, e));
                    walk.unlisted.push(rel.clone());
                    walk.unreadable.push(rel);
                    continue;
                }
            };
            walk.dirs.push(rel.clone());
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        // The listing broke off: what it did not name may still be there.
                        walk.errors.push(error(&rel, e));
                        walk.unreadable.push(rel.clone());
                        break;
                    }
                };
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    let lossy = name.to_string_lossy();
                    walk.errors.push(ScanError {
                        path: join(&rel, &lossy),
                        reason: "the name is not valid UTF-8".into(),
                    });
                    continue;
                };
                stack.push(join(&rel, name));
            }
        } else if meta.is_file() {
            if rel.ends_with(PARTIAL_SUFFIX) {
                continue;
            }
            walk.files.push(FoundFile {
                path: rel,
                stamp: Stamp::of(&meta),
            });
        }
        // Anything else (socket, fifo, device) is skipped on purpose.
    }
    walk
}

/// The metadata of a symlink's target if it is a file inside `root` (canonical); `None`
/// otherwise.
fn resolve_link(root: &Path, link: &Path) -> Option<(PathBuf, Metadata)> {
    let target = fs::canonicalize(link).ok()?;
    if !target.starts_with(root) {
        tracing::debug!(link = %link.display(), "not following a symlink out of the shared folder");
        return None;
    }
    let meta = fs::metadata(&target).ok()?;
    meta.is_file().then_some((target, meta))
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

fn error(rel: &str, e: std::io::Error) -> ScanError {
    ScanError {
        path: rel.to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_finds_files_and_dirs_and_skips_what_it_must() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("a/empty")).unwrap();
        fs::write(root.join("a/f.txt"), b"hello").unwrap();
        fs::write(root.join("top"), b"x").unwrap();
        fs::write(root.join("dl.bin.iwant-part"), b"partial").unwrap();
        #[cfg(unix)]
        {
            let outside = tempfile::tempdir().unwrap();
            fs::write(outside.path().join("secret"), b"s").unwrap();
            std::os::unix::fs::symlink(outside.path().join("secret"), root.join("escape")).unwrap();
            std::os::unix::fs::symlink(root.join("top"), root.join("inner-link")).unwrap();
            std::os::unix::fs::symlink(&root, root.join("a/loop")).unwrap();
            let _ = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        }
        let mut w = walk(&root, "", &Rules::default());
        w.files.sort_by(|a, b| a.path.cmp(&b.path));
        w.dirs.sort();
        let files: Vec<&str> = w.files.iter().map(|f| f.path.as_str()).collect();
        // The partial download is never listed; on Unix, the link to a file inside is (as the
        // file it names), the links out of the folder, to a directory and the socket are not.
        #[cfg(unix)]
        assert_eq!(files, ["a/f.txt", "inner-link", "top"]);
        #[cfg(not(unix))]
        assert_eq!(files, ["a/f.txt", "top"]);
        assert_eq!(w.dirs, ["", "a", "a/empty"]);
        assert!(w.errors.is_empty(), "{:?}", w.errors);
        assert_eq!(w.files[0].stamp.size, 5);

        let stopped = walk_until(&root, "", &Rules::default(), &|| true);
        assert!(stopped.interrupted && stopped.files.is_empty());

        let sub = walk(&root, "a", &Rules::default());
        assert_eq!(sub.dirs.len(), 2);
        assert!(walk(&root, "missing", &Rules::default()).files.is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn non_utf8_names_are_reported_not_indexed() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::write(root.join(std::ffi::OsStr::from_bytes(b"bad\xff")), b"x").unwrap();
        let w = walk(&root, "", &Rules::default());
        assert!(w.files.is_empty());
        assert_eq!(w.errors.len(), 1);
        assert!(w.errors[0].reason.contains("UTF-8"));
    }

    #[test]
    fn relative_paths_use_slashes() {
        assert_eq!(
            rel_string(Path::new("a").join("b").as_path()).unwrap(),
            "a/b"
        );
        assert_eq!(
            native(Path::new("/r"), "a/b"),
            Path::new("/r").join("a").join("b")
        );
        assert_eq!(native(Path::new("/r"), ""), Path::new("/r"));
    }
}
