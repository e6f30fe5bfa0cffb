//! What this node downloaded into its download folder: the only files the download folder
//! offers to the network (the downloads collection), each only while its content is still the
//! content that was downloaded.
//!
//! A finished download records every file it placed (its path relative to the download folder
//! and its content id), and every folder (also an empty one), in the store and here. The indexer of the download folder walks only
//! those files and the folders above them ([`Placed::has_dir`]), and drops a file whose content
//! is no longer the placed id: what the user saves into the download folder, or edits there,
//! is never offered.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    path::Path,
    sync::RwLock,
};

use iwant_behaviours::id::Id;

use crate::store::{Db, StoreError};

/// The store root under which a finished download records the hashes it verified, keyed by
/// each placed file's stamp: the download folder's indexer finds them there (a file seen
/// before with the same inode, size and times is not read again) and offers the download
/// without hashing it a second time. A cache: pruned like any root that is not in use.
pub const VERIFIED_ROOT: &str = "iwant:verified-downloads";

/// Why the download folder's indexer leaves a file or folder out.
pub const NOT_PLACED: &str =
    "not downloaded by this node (only what iwant downloaded is offered from the download folder)";

/// Why the download folder's indexer drops a file it placed.
pub const CHANGED: &str =
    "changed since this node downloaded it (only unchanged downloads are offered)";

/// What downloads placed in the download folder `dir`, as the store remembers it (read on a
/// blocking thread).
pub async fn stored(db: &Db, dir: &Path) -> Result<Vec<(String, Option<Id>)>, StoreError> {
    let (db, key) = (db.clone(), dir.to_string_lossy().into_owned());
    tokio::task::spawn_blocking(move || db.get()?.placed(&key))
        .await
        .expect("bug: store task panicked")
}

/// The files placed by this node's downloads, and the folders above them.
#[derive(Default)]
pub struct Placed {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    files: HashMap<String, Id>,
    /// Every folder above a placed file ("" included once there is one).
    dirs: HashSet<String>,
}

impl fmt::Debug for Placed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.read().expect("bug: poisoned");
        f.debug_struct("Placed")
            .field("files", &inner.files.len())
            .finish()
    }
}

impl Placed {
    /// What downloads placed: files (relative `/`-separated paths, content ids) and folders
    /// (no id).
    pub fn new(entries: impl IntoIterator<Item = (String, Option<Id>)>) -> Self {
        let placed = Self::default();
        placed.add(entries);
        placed
    }

    /// Records more placed files and folders (a file placed again at a path replaces the old
    /// one).
    pub fn add(&self, entries: impl IntoIterator<Item = (String, Option<Id>)>) {
        let mut inner = self.inner.write().expect("bug: poisoned");
        Self::add_to(&mut inner, entries);
    }

    /// Forgets everything placed and records `entries` instead (the download folder changed).
    pub fn replace(&self, entries: impl IntoIterator<Item = (String, Option<Id>)>) {
        let mut inner = self.inner.write().expect("bug: poisoned");
        *inner = Inner::default();
        Self::add_to(&mut inner, entries);
    }

    fn add_to(inner: &mut Inner, entries: impl IntoIterator<Item = (String, Option<Id>)>) {
        for (path, id) in entries {
            let mut at = path.as_str();
            if id.is_none() && !inner.dirs.insert(path.clone()) {
                continue;
            }
            while let Some(i) = at.rfind('/') {
                at = &at[..i];
                if !inner.dirs.insert(at.to_string()) {
                    break;
                }
            }
            inner.dirs.insert(String::new());
            if let Some(id) = id {
                inner.files.insert(path, id);
            }
        }
    }

    /// The content placed at `rel`, if a download placed a file there.
    pub fn file(&self, rel: &str) -> Option<Id> {
        self.inner
            .read()
            .expect("bug: poisoned")
            .files
            .get(rel)
            .copied()
    }

    /// Whether a placed file lies below the folder `rel` ("" is the download folder).
    pub fn has_dir(&self, rel: &str) -> bool {
        self.inner.read().expect("bug: poisoned").dirs.contains(rel)
    }

    /// How many files are placed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.read().expect("bug: poisoned").files.len()
    }

    /// Whether no file is placed.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_files_open_the_folders_above_them_and_nothing_else() {
        let placed = Placed::new([
            ("album/disc 1/01.flac".to_string(), Some(Id([1; 32]))),
            ("album/empty".to_string(), None),
        ]);
        assert!(!placed.is_empty());
        for dir in ["", "album", "album/disc 1", "album/empty"] {
            assert!(placed.has_dir(dir), "{dir:?}");
        }
        assert!(!placed.has_dir("album/disc 2"));
        assert!(!placed.has_dir("other"));
        assert_eq!(placed.file("album/disc 1/01.flac"), Some(Id([1; 32])));
        assert_eq!(placed.file("album/disc 1/02.flac"), None);
        placed.add([
            ("movie.mkv".to_string(), Some(Id([2; 32]))),
            ("album/disc 1/01.flac".to_string(), Some(Id([3; 32]))),
        ]);
        assert_eq!(placed.len(), 2);
        assert_eq!(placed.file("album/disc 1/01.flac"), Some(Id([3; 32])));
        assert!(!placed.has_dir("movie.mkv"));
        placed.replace([("other/x".to_string(), Some(Id([4; 32])))]);
        assert_eq!(placed.len(), 1);
        assert!(!placed.has_dir("album"));
        assert!(placed.has_dir("other"));
    }
}
