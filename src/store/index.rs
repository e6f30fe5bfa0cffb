//! Queries on the index tables (`files`, `dirs`, `scan_errors`).

use rusqlite::{params, OptionalExtension, Row};

use super::{Store, StoreError};

/// One indexed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    /// Path relative to the share root, `/`-separated.
    pub path: String,
    /// The version of the file that was hashed.
    pub stamp: Stamp,
    /// BLAKE3 hash of the content.
    pub id: [u8; 32],
    /// Piece size used for `pieces`.
    pub piece_size: u64,
    /// Piece hashes, 32 bytes each; empty for one-piece files.
    pub pieces: Vec<u8>,
}

/// A file's path and version on disk, without its hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    /// Path relative to the share root, `/`-separated.
    pub path: String,
    /// The version of the file that was hashed.
    pub stamp: Stamp,
}

/// What identifies one version of a file on disk. Any write to the file changes at least one
/// of these (ctime catches an in-place edit that restores the mtime), and the device and inode
/// tell a file from another one swapped in at the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// Length in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the Unix epoch; 0 where the platform has none.
    pub ctime_ns: i64,
    /// Inode (Unix) or file index (Windows), where the platform gives one.
    pub inode: Option<u64>,
    /// Device (Unix) or volume serial number (Windows), where the platform gives one.
    pub dev: Option<u64>,
}

/// One indexed directory (the share root has the path "").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirRow {
    /// Path relative to the share root.
    pub path: String,
    /// The directory id (hash of its manifest).
    pub id: [u8; 32],
    /// Total bytes of the files below it.
    pub size: u64,
    /// Number of files below it.
    pub files: u64,
}

/// A file or directory as a manifest needs it: no piece hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    /// Path relative to the share root.
    pub path: String,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// File length (directories: their stored total).
    pub size: u64,
    /// File id (directories: their stored id).
    pub id: [u8; 32],
    /// A file's modification time (of the version indexed), nanoseconds since the Unix epoch;
    /// 0 for directories.
    pub mtime_ns: i64,
}

/// An entry that could not be indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    /// Path relative to the share root (lossy if the name is not UTF-8).
    pub path: String,
    /// Why it was skipped.
    pub reason: String,
}

/// The most skipped entries stored per root; more are left out of the list (and the count).
pub const MAX_SKIPPED_STORED: u64 = 10_000;

/// Totals of one root's index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexCounts {
    /// Indexed files.
    pub files: u64,
    /// Indexed directories, the root included.
    pub dirs: u64,
    /// Total bytes of the indexed files.
    pub bytes: u64,
    /// Entries that could not be indexed.
    pub errors: u64,
    /// Entries left out on purpose (stored ones, at most [`MAX_SKIPPED_STORED`]).
    pub skipped: u64,
}

/// One batch of changes, written in one transaction.
#[derive(Debug, Default)]
pub struct IndexChange {
    /// Files added or changed.
    pub upsert_files: Vec<FileRow>,
    /// Files gone, by path.
    pub remove_files: Vec<String>,
    /// Directories added or whose id changed.
    pub upsert_dirs: Vec<DirRow>,
    /// Directories gone, by path.
    pub remove_dirs: Vec<String>,
    /// Replace the scan errors at and below this path (`Some("")`: all) with `errors`.
    pub errors_under: Option<String>,
    /// The new scan errors.
    pub errors: Vec<ScanError>,
    /// The entries left out on purpose at and below `errors_under` (they replace those stored).
    pub skipped: Vec<ScanError>,
}

impl IndexChange {
    /// Whether the batch changes files or directories (scan errors aside).
    pub fn touches_entries(&self) -> bool {
        !(self.upsert_files.is_empty()
            && self.remove_files.is_empty()
            && self.upsert_dirs.is_empty()
            && self.remove_dirs.is_empty())
    }
}

/// The SQL condition "path is `rel` or below it" on parameters ?2 (rel), ?3 (rel + "/"),
/// ?4 (rel + "0"): '0' is the byte after '/', so the range holds exactly the paths below.
pub(super) const UNDER: &str = "(?2 = '' OR path = ?2 OR (path >= ?3 AND path < ?4))";

pub(super) fn under_params(rel: &str) -> (String, String) {
    (format!("{rel}/"), format!("{rel}0"))
}

/// The [`Stamp`] in columns `at..at + 5` of [`STAMP_COLUMNS`].
fn stamp_at(row: &Row<'_>, at: usize) -> rusqlite::Result<Stamp> {
    Ok(Stamp {
        size: row.get::<_, i64>(at)? as u64,
        mtime_ns: row.get(at + 1)?,
        ctime_ns: row.get(at + 2)?,
        inode: row.get::<_, Option<i64>>(at + 3)?.map(|i| i as u64),
        dev: row.get::<_, Option<i64>>(at + 4)?.map(|i| i as u64),
    })
}

/// The columns of a [`Stamp`], in [`stamp_at`]'s order.
const STAMP_COLUMNS: &str = "size, mtime_ns, ctime_ns, inode, dev";

pub(super) fn file_row(row: &Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        path: row.get(0)?,
        stamp: stamp_at(row, 1)?,
        id: row.get(6)?,
        piece_size: row.get::<_, i64>(7)? as u64,
        pieces: row.get(8)?,
    })
}

pub(super) const FILE_COLUMNS: &str =
    "path, size, mtime_ns, ctime_ns, inode, dev, id, piece_size, pieces";

impl Store {
    /// What a rescan compares of the files of `root` at or below `rel` ("" for all): no
    /// hashes, so a rescan does not read piece lists it does not need.
    pub fn file_stats_under(&self, root: &str, rel: &str) -> Result<Vec<FileStat>, StoreError> {
        let (lo, hi) = under_params(rel);
        let sql = format!(
            "SELECT path, {STAMP_COLUMNS} FROM files WHERE root = ?1 AND {UNDER} ORDER BY path"
        );
        self.query(&sql, params![root, rel, lo, hi], |row| {
            Ok(FileStat {
                path: row.get(0)?,
                stamp: stamp_at(row, 1)?,
            })
        })
    }

    /// The directory paths of `root` at or below `rel`.
    pub fn dirs_under(&self, root: &str, rel: &str) -> Result<Vec<DirRow>, StoreError> {
        let (lo, hi) = under_params(rel);
        let sql = format!(
            "SELECT path, id, size, files FROM dirs WHERE root = ?1 AND {UNDER} ORDER BY path"
        );
        self.query(&sql, params![root, rel, lo, hi], |row| {
            Ok(DirRow {
                path: row.get(0)?,
                id: row.get(1)?,
                size: row.get::<_, i64>(2)? as u64,
                files: row.get::<_, i64>(3)? as u64,
            })
        })
    }

    /// Every file and directory of `root` except the root itself, sorted by path bytes.
    pub fn entries(&self, root: &str) -> Result<Vec<EntryRow>, StoreError> {
        self.entries_below(root, "")
    }

    /// Removes every index row of roots other than `keep` (at most two roots are kept: the
    /// current one and, as a hash cache, the previous one).
    pub fn forget_other_roots(&mut self, keep: &[&str]) -> Result<(), StoreError> {
        let placeholders = vec!["?"; keep.len()].join(", ");
        for table in ["files", "dirs", "scan_errors", "skipped"] {
            let sql = format!("DELETE FROM {table} WHERE root NOT IN ({placeholders})");
            self.conn
                .execute(&sql, rusqlite::params_from_iter(keep))
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// The scan errors of `root`, sorted by path.
    pub fn scan_errors(&self, root: &str) -> Result<Vec<ScanError>, StoreError> {
        self.query(
            "SELECT path, reason FROM scan_errors WHERE root = ?1 ORDER BY path",
            params![root],
            |row| {
                Ok(ScanError {
                    path: row.get(0)?,
                    reason: row.get(1)?,
                })
            },
        )
    }

    /// The entries of `root` left out on purpose, sorted by path, at most `limit`.
    pub fn skipped(&self, root: &str, limit: u64) -> Result<Vec<ScanError>, StoreError> {
        self.query(
            "SELECT path, reason FROM skipped WHERE root = ?1 ORDER BY path LIMIT ?2",
            params![root, i64::try_from(limit).unwrap_or(i64::MAX)],
            |row| {
                Ok(ScanError {
                    path: row.get(0)?,
                    reason: row.get(1)?,
                })
            },
        )
    }

    /// A file hashed before, under any root, with exactly this stamp (inode, device, size,
    /// mtime and ctime): its hashes can be reused. A stamp without an inode never matches.
    pub fn reusable_hash(&self, stamp: &Stamp) -> Result<Option<FileRow>, StoreError> {
        let Some(inode) = stamp.inode else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE inode = ?1 AND size = ?2 AND mtime_ns = ?3
             AND ctime_ns = ?4 AND dev IS ?5 LIMIT 1"
        );
        self.conn
            .query_row(
                &sql,
                params![
                    inode as i64,
                    stamp.size as i64,
                    stamp.mtime_ns,
                    stamp.ctime_ns,
                    stamp.dev.map(|d| d as i64)
                ],
                file_row,
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    /// Whether any file is indexed under any root.
    pub fn has_files(&self) -> Result<bool, StoreError> {
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM files)", [], |r| r.get(0))
            .map_err(|e| self.error(e))
    }

    /// Totals of `root`'s index.
    pub fn index_counts(&self, root: &str) -> Result<IndexCounts, StoreError> {
        let (files, bytes): (i64, i64) = self
            .conn
            .query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM files WHERE root = ?1",
                [root],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.error(e))?;
        let count = |table: &str| -> Result<u64, StoreError> {
            self.conn
                .query_row(
                    &format!("SELECT count(*) FROM {table} WHERE root = ?1"),
                    [root],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as u64)
                .map_err(|e| self.error(e))
        };
        Ok(IndexCounts {
            files: files as u64,
            bytes: bytes as u64,
            dirs: count("dirs")?,
            errors: count("scan_errors")?,
            skipped: count("skipped")?,
        })
    }

    /// Writes one batch of index changes for `root` in one transaction.
    pub fn apply_index_change(
        &mut self,
        root: &str,
        change: &IndexChange,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut del = tx
                .prepare_cached("DELETE FROM files WHERE root = ?1 AND path = ?2")
                .map_err(err)?;
            for p in &change.remove_files {
                del.execute(params![root, p]).map_err(err)?;
            }
            put_files(&tx, root, &change.upsert_files).map_err(err)?;
            let mut del = tx
                .prepare_cached("DELETE FROM dirs WHERE root = ?1 AND path = ?2")
                .map_err(err)?;
            for p in &change.remove_dirs {
                del.execute(params![root, p]).map_err(err)?;
            }
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO dirs (root, path, id, size, files) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(err)?;
            for d in &change.upsert_dirs {
                put.execute(params![root, d.path, d.id, d.size as i64, d.files as i64])
                    .map_err(err)?;
            }
            if let Some(rel) = &change.errors_under {
                let (lo, hi) = under_params(rel);
                tx.execute(
                    &format!("DELETE FROM scan_errors WHERE root = ?1 AND {UNDER}"),
                    params![root, rel, lo, hi],
                )
                .map_err(err)?;
                let mut put = tx
                    .prepare_cached("INSERT OR REPLACE INTO scan_errors (root, path, reason) VALUES (?1, ?2, ?3)")
                    .map_err(err)?;
                for e in &change.errors {
                    put.execute(params![root, e.path, e.reason]).map_err(err)?;
                }
                tx.execute(
                    &format!("DELETE FROM skipped WHERE root = ?1 AND {UNDER}"),
                    params![root, rel, lo, hi],
                )
                .map_err(err)?;
                let stored: u64 = tx
                    .query_row(
                        "SELECT count(*) FROM skipped WHERE root = ?1",
                        params![root],
                        |r| r.get::<_, i64>(0),
                    )
                    .map_err(err)? as u64;
                let mut put = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO skipped (root, path, reason) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(err)?;
                let room = usize::try_from(MAX_SKIPPED_STORED.saturating_sub(stored))
                    .unwrap_or(usize::MAX);
                for e in change.skipped.iter().take(room) {
                    put.execute(params![root, e.path, e.reason]).map_err(err)?;
                }
            }
        }
        tx.commit().map_err(err)
    }

    pub(super) fn query<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.error(e))?;
        let rows = stmt.query_map(params, map).map_err(|e| self.error(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(e))
    }
}

/// Inserts (or replaces) `rows` as files of `root`.
pub(super) fn put_files(
    tx: &rusqlite::Transaction<'_>,
    root: &str,
    rows: &[FileRow],
) -> rusqlite::Result<()> {
    let mut put = tx.prepare_cached(
        "INSERT OR REPLACE INTO files (root, path, size, mtime_ns, ctime_ns, inode, dev, id, piece_size, pieces)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for f in rows {
        put.execute(params![
            root,
            f.path,
            f.stamp.size as i64,
            f.stamp.mtime_ns,
            f.stamp.ctime_ns,
            f.stamp.inode.map(|i| i as i64),
            f.stamp.dev.map(|d| d as i64),
            f.id,
            f.piece_size as i64,
            f.pieces
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, inode: u64) -> FileRow {
        FileRow {
            path: path.into(),
            stamp: Stamp {
                size: 10,
                mtime_ns: 5,
                inode: Some(inode),
                ..Default::default()
            },
            id: [inode as u8; 32],
            piece_size: 262_144,
            pieces: Vec::new(),
        }
    }

    #[test]
    fn under_selects_exactly_the_subtree() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        let change = IndexChange {
            upsert_files: ["a", "a/b", "a/b/c", "a-b", "a0", "ab", "b"]
                .iter()
                .enumerate()
                .map(|(i, p)| file(p, i as u64))
                .collect(),
            ..Default::default()
        };
        store.apply_index_change("/r", &change).unwrap();
        fn paths(store: &Store, rel: &str) -> Vec<String> {
            store
                .file_stats_under("/r", rel)
                .unwrap()
                .into_iter()
                .map(|f| f.path)
                .collect()
        }
        assert_eq!(paths(&store, "a"), ["a", "a/b", "a/b/c"]);
        assert_eq!(paths(&store, "a/b"), ["a/b", "a/b/c"]);
        assert_eq!(paths(&store, "").len(), 7);
        assert!(store.file_stats_under("/other", "").unwrap().is_empty());
        assert_eq!(
            store
                .reusable_hash(&Stamp {
                    size: 10,
                    mtime_ns: 5,
                    inode: Some(3),
                    ..Default::default()
                })
                .unwrap()
                .unwrap()
                .path,
            "a-b"
        );
        assert_eq!(store.index_counts("/r").unwrap().files, 7);

        let change = IndexChange {
            remove_files: vec!["a/b".into()],
            errors_under: Some("a".into()),
            errors: vec![ScanError {
                path: "a/x".into(),
                reason: "permission denied".into(),
            }],
            ..Default::default()
        };
        store.apply_index_change("/r", &change).unwrap();
        assert_eq!(paths(&store, "a"), ["a", "a/b/c"]);
        assert_eq!(store.scan_errors("/r").unwrap().len(), 1);
    }
}
