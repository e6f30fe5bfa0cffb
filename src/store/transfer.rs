//! Queries for transfers: what this node serves (shared files and directories by id) and the
//! downloads in progress (`downloads`).

use iwant_behaviours::{id::Id, wire::Kind};
use rusqlite::{params, OptionalExtension};

use super::{
    index::{file_row, under_params, FILE_COLUMNS, UNDER},
    EntryRow, FileRow, Store, StoreError,
};

/// A download in progress, as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadRow {
    /// The content id.
    pub id: Id,
    /// File or directory.
    pub kind: Kind,
    /// The name it gets in the download folder (before any ` (1)` suffix).
    pub name: String,
    /// Total bytes.
    pub size: u64,
    /// The download folder it lands in.
    pub dest: String,
    /// The partial file or directory.
    pub part: String,
    /// A file's verified piece list, or a directory's verified manifest.
    pub meta: Vec<u8>,
    /// The bitfield of verified units.
    pub done: Vec<u8>,
    /// When it started, milliseconds since the Unix epoch.
    pub started_ms: i64,
    /// Where the finished download was moved, while its data may not be on disk yet.
    pub placed: Option<String>,
    /// The attributes a holder told for its files (`content::FileAttrs` records, one per
    /// manifest entry, or one for a file), when one did.
    pub attrs: Option<Vec<u8>>,
}

const DOWNLOAD_COLUMNS: &str =
    "id, kind, name, size, dest, part, meta, done, started_ms, placed, attrs";

fn download_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DownloadRow> {
    Ok(DownloadRow {
        id: row.get(0)?,
        kind: row.get(1)?,
        name: row.get(2)?,
        size: row.get::<_, i64>(3)? as u64,
        dest: row.get(4)?,
        part: row.get(5)?,
        meta: row.get(6)?,
        done: row.get(7)?,
        started_ms: row.get(8)?,
        placed: row.get(9)?,
        attrs: row.get(10)?,
    })
}

/// An [`EntryRow`] from `path, is_dir, size, id, mtime_ns`.
fn entry_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EntryRow> {
    Ok(EntryRow {
        path: row.get(0)?,
        is_dir: row.get::<_, i64>(1)? == 1,
        size: row.get::<_, i64>(2)? as u64,
        id: row.get(3)?,
        mtime_ns: row.get(4)?,
    })
}

impl Store {
    /// A file of `root` whose content is `id`, if it is indexed there.
    pub fn shared_file(&self, root: &str, id: &Id) -> Result<Option<FileRow>, StoreError> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM files WHERE root = ?1 AND id = ?2 LIMIT 1");
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_row(params![root, id], file_row).optional())
            .map_err(|e| self.error(e))
    }

    /// The path of a directory of `root` whose id is `id`, if it is indexed there.
    pub fn shared_dir(&self, root: &str, id: &Id) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT path FROM dirs WHERE root = ?1 AND id = ?2 LIMIT 1")
            .and_then(|mut stmt| stmt.query_row(params![root, id], |r| r.get(0)).optional())
            .map_err(|e| self.error(e))
    }

    /// The files and directories strictly below `rel` in `root` ("" for everything but the
    /// root), sorted by path bytes.
    pub fn entries_below(&self, root: &str, rel: &str) -> Result<Vec<EntryRow>, StoreError> {
        let (lo, hi) = under_params(rel);
        let sql = format!(
            "SELECT path, 0, size, id, mtime_ns FROM files WHERE root = ?1 AND {UNDER} AND path != ?2
             UNION ALL SELECT path, 1, size, id, 0 FROM dirs WHERE root = ?1 AND {UNDER} AND path != ?2
             ORDER BY 1"
        );
        self.query(&sql, params![root, rel, lo, hi], entry_row)
    }

    /// At most `limit` entries of `root` at or below `rel` ("" for all of them) whose paths sort
    /// after `after` (by bytes), in path order; and how many entries are at or below `rel` in
    /// all.
    pub fn list_page(
        &self,
        root: &str,
        rel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(u64, Vec<EntryRow>), StoreError> {
        let (lo, hi) = under_params(rel);
        let sql = format!(
            "SELECT path, 0, size, id, mtime_ns FROM files
               WHERE root = ?1 AND {UNDER} AND (?5 IS NULL OR path > ?5)
             UNION ALL SELECT path, 1, size, id, 0 FROM dirs
               WHERE root = ?1 AND {UNDER} AND (?5 IS NULL OR path > ?5)
             ORDER BY 1 LIMIT ?6"
        );
        let rows = self.query(
            &sql,
            params![root, rel, lo, hi, after, limit as i64],
            entry_row,
        )?;
        let count = format!(
            "SELECT (SELECT count(*) FROM files WHERE root = ?1 AND {UNDER})
                  + (SELECT count(*) FROM dirs WHERE root = ?1 AND {UNDER})"
        );
        let total: i64 = self
            .conn
            .prepare_cached(&count)
            .and_then(|mut stmt| stmt.query_row(params![root, rel, lo, hi], |r| r.get(0)))
            .map_err(|e| self.error(e))?;
        Ok((total as u64, rows))
    }

    /// Records a new download (or replaces the row of the same id).
    pub fn put_download(&self, row: &DownloadRow) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO downloads (id, kind, name, size, dest, part, meta, done, started_ms, placed, attrs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    row.id,
                    row.kind,
                    row.name,
                    row.size as i64,
                    row.dest,
                    row.part,
                    row.meta,
                    row.done,
                    row.started_ms,
                    row.placed,
                    row.attrs
                ],
            )
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Saves the bitfield of verified units of download `id`.
    pub fn set_download_done(&self, id: &Id, done: &[u8]) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE downloads SET done = ?2 WHERE id = ?1",
                params![id, done],
            )
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Records where download `id` was moved (`None`: it was not, or that copy was bad).
    pub fn set_download_placed(&self, id: &Id, placed: Option<&str>) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE downloads SET placed = ?2 WHERE id = ?1",
                params![id, placed],
            )
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Every download in progress, oldest first.
    pub fn downloads(&self) -> Result<Vec<DownloadRow>, StoreError> {
        let sql = format!("SELECT {DOWNLOAD_COLUMNS} FROM downloads ORDER BY started_ms, id");
        self.query(&sql, [], download_row)
    }

    /// The download of `id`, if there is one.
    pub fn download(&self, id: &Id) -> Result<Option<DownloadRow>, StoreError> {
        let sql = format!("SELECT {DOWNLOAD_COLUMNS} FROM downloads WHERE id = ?1");
        self.conn
            .query_row(&sql, params![id], download_row)
            .optional()
            .map_err(|e| self.error(e))
    }

    /// Forgets download `id` if its row is the one started at `started_ms` (a newer download of
    /// the same id keeps its own).
    pub fn forget_download(&self, id: &Id, started_ms: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM downloads WHERE id = ?1 AND started_ms = ?2",
                params![id, started_ms],
            )
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Records what a download placed in the download folder `root`: files (relative paths,
    /// content ids) and folders (no id); a path placed again gets the new content.
    pub fn add_placed(&self, root: &str, files: &[(String, Option<Id>)]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.error(e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO placed (root, path, id) VALUES (?1, ?2, ?3)",
                )
                .map_err(|e| self.error(e))?;
            for (path, id) in files {
                stmt.execute(params![root, path, id])
                    .map_err(|e| self.error(e))?;
            }
        }
        tx.commit().map_err(|e| self.error(e))
    }

    /// Records file rows under `root` alone (no directories, errors or removals): the hashes a
    /// finished download verified, for [`Store::reusable_hash`] to find.
    pub fn put_file_rows(&self, root: &str, rows: &[FileRow]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.error(e))?;
        super::index::put_files(&tx, root, rows).map_err(|e| self.error(e))?;
        tx.commit().map_err(|e| self.error(e))
    }

    /// The files (with their content) and folders (no id) downloads placed in the download
    /// folder `root`.
    pub fn placed(&self, root: &str) -> Result<Vec<(String, Option<Id>)>, StoreError> {
        self.query(
            "SELECT path, id FROM placed WHERE root = ?1",
            params![root],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
    }

    /// Forgets download `id` (finished or cancelled).
    pub fn delete_download(&self, id: &Id) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM downloads WHERE id = ?1", params![id])
            .map(drop)
            .map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DirRow, IndexChange};

    #[test]
    fn downloads_round_trip_and_shared_content_is_found_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        let row = DownloadRow {
            id: Id([1; 32]),
            kind: Kind::File,
            name: "a.bin".into(),
            size: 10,
            dest: "/d".into(),
            part: "/d/.a.bin.iwant-part".into(),
            meta: vec![],
            done: vec![0],
            started_ms: 5,
            placed: None,
            attrs: Some(vec![3; 9]),
        };
        store.put_download(&row).unwrap();
        store.set_download_done(&row.id, &[3]).unwrap();
        store
            .set_download_placed(&row.id, Some("/d/a.bin"))
            .unwrap();
        let back = store.downloads().unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].done, [3]);
        assert_eq!(back[0].placed.as_deref(), Some("/d/a.bin"));
        assert_eq!(back[0].attrs, Some(vec![3; 9]));
        assert_eq!(store.download(&row.id).unwrap().unwrap().name, "a.bin");
        assert!(store.download(&Id([2; 32])).unwrap().is_none());
        store.delete_download(&row.id).unwrap();
        assert!(store.downloads().unwrap().is_empty());

        let change = IndexChange {
            upsert_files: vec![FileRow {
                path: "d/f".into(),
                stamp: crate::store::Stamp {
                    size: 3,
                    mtime_ns: 1,
                    ..Default::default()
                },
                id: [7; 32],
                piece_size: 262_144,
                pieces: vec![],
            }],
            upsert_dirs: vec![DirRow {
                path: "d".into(),
                id: [8; 32],
                size: 3,
                files: 1,
            }],
            ..Default::default()
        };
        store.apply_index_change("/r", &change).unwrap();
        assert_eq!(
            store.shared_file("/r", &Id([7; 32])).unwrap().unwrap().path,
            "d/f"
        );
        assert!(store.shared_file("/other", &Id([7; 32])).unwrap().is_none());
        assert_eq!(
            store.shared_dir("/r", &Id([8; 32])).unwrap().as_deref(),
            Some("d")
        );
        let below = store.entries_below("/r", "d").unwrap();
        assert_eq!(below.len(), 1);
        assert_eq!(below[0].path, "d/f");
        assert_eq!(below[0].mtime_ns, 1);
    }

    #[test]
    fn listings_page_in_path_order_at_and_below_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        let file = |path: &str| FileRow {
            path: path.into(),
            stamp: crate::store::Stamp::default(),
            id: [7; 32],
            piece_size: 262_144,
            pieces: vec![],
        };
        let dir_row = |path: &str| DirRow {
            path: path.into(),
            id: [8; 32],
            size: 0,
            files: 0,
        };
        let change = IndexChange {
            upsert_files: ["a/x", "a/y", "a0", "b"].map(file).to_vec(),
            upsert_dirs: ["", "a"].map(dir_row).to_vec(),
            ..Default::default()
        };
        store.apply_index_change("/r", &change).unwrap();
        let paths = |rows: &[EntryRow]| rows.iter().map(|r| r.path.clone()).collect::<Vec<_>>();
        let (total, page) = store.list_page("/r", "", None, 3).unwrap();
        assert_eq!(
            (total, paths(&page)),
            (6, vec!["".into(), "a".into(), "a/x".into()])
        );
        let (_, page) = store.list_page("/r", "", Some("a/x"), 3).unwrap();
        assert_eq!(paths(&page), ["a/y", "a0", "b"]);
        let (_, page) = store.list_page("/r", "", Some("b"), 3).unwrap();
        assert!(page.is_empty());
        // A folder: itself and below, not its look-alike neighbour `a0`.
        let (total, page) = store.list_page("/r", "a", None, 10).unwrap();
        assert_eq!(
            (total, paths(&page)),
            (3, vec!["a".into(), "a/x".into(), "a/y".into()])
        );
        assert!(page[0].is_dir && !page[1].is_dir);
        let (total, page) = store.list_page("/r", "nothing", None, 10).unwrap();
        assert_eq!((total, page.len()), (0, 0));
    }
}
