//! The node's SQLite database: schema, migrations and every SQL query.
//!
//! Only this module runs SQL. The schema version is SQLite's `user_version`; `MIGRATIONS`
//! lists the steps from an empty file to the current schema, applied in order at open.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use rusqlite::Connection;

/// Schema migrations, oldest first. Migration `i` moves `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: node-level facts (creation time, last start).
    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) STRICT;",
    // 2: the index of shared folders. Rows are keyed by the share root they were found under
    // and their path relative to it ('/'-separated). Rows of earlier roots stay as a hash
    // cache: a file seen before (same inode, size and mtime) is not hashed again.
    "CREATE TABLE files (
        root TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode INTEGER,
        id BLOB NOT NULL,
        piece_size INTEGER NOT NULL,
        pieces BLOB NOT NULL,
        PRIMARY KEY (root, path)
    ) STRICT;
    CREATE INDEX files_by_id ON files (id);
    CREATE INDEX files_by_inode ON files (inode, size, mtime_ns);
    CREATE TABLE dirs (
        root TEXT NOT NULL,
        path TEXT NOT NULL,
        id BLOB NOT NULL,
        size INTEGER NOT NULL,
        files INTEGER NOT NULL,
        PRIMARY KEY (root, path)
    ) STRICT;
    CREATE INDEX dirs_by_id ON dirs (id);
    CREATE TABLE scan_errors (
        root TEXT NOT NULL,
        path TEXT NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (root, path)
    ) STRICT;",
    // 3: downloads in progress. `done` is the bitfield of verified units (see
    // `transfer::download`); `placed` is where a finished download was moved, until its data
    // is known to be on disk; then (or when cancelled) the row is deleted.
    "CREATE TABLE downloads (
        id BLOB PRIMARY KEY NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        dest TEXT NOT NULL,
        part TEXT NOT NULL,
        meta BLOB NOT NULL,
        done BLOB NOT NULL,
        started_ms INTEGER NOT NULL,
        placed TEXT
    ) STRICT;",
    // 4: a file's version also records its ctime and device (see `Stamp`). Rows from before
    // have ctime 0 and no device, so they match nothing and are hashed once more.
    "ALTER TABLE files ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE files ADD COLUMN dev INTEGER;
    DROP INDEX files_by_inode;
    CREATE INDEX files_by_inode ON files (inode, size, mtime_ns, ctime_ns);",
    // 5: entries the walk left out on purpose (hidden, secrets, ignore rules, the node's home),
    // at most `MAX_SKIPPED_STORED` per root.
    "CREATE TABLE skipped (
        root TEXT NOT NULL,
        path TEXT NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (root, path)
    ) STRICT;",
    // 6: the files (with the content placed) and folders (no id) this node's downloads placed
    // in a download folder (`root`): the only entries that folder offers to the network.
    "CREATE TABLE placed (
        root TEXT NOT NULL,
        path TEXT NOT NULL,
        id BLOB,
        PRIMARY KEY (root, path)
    ) STRICT;",
    // 7: the file attributes (executable bit, modification time) a holder told a download.
    "ALTER TABLE downloads ADD COLUMN attrs BLOB;",
];

mod index;
mod transfer;
pub use index::{
    DirRow, EntryRow, FileRow, FileStat, IndexChange, IndexCounts, ScanError, Stamp,
    MAX_SKIPPED_STORED,
};
pub use transfer::DownloadRow;

/// Errors from the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer iwant.
    #[error("database {path} has schema version {found}, newer than this iwant understands ({supported}); upgrade iwant")]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
}

/// An open database. Blocking: call it from a blocking thread, never from the event loop.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// The most idle connections a [`Db`] keeps for reuse.
const MAX_IDLE: usize = 4;

/// The database, opened once: the schema is brought up to date once, and connections are
/// handed out ([`Db::get`]) and taken back when dropped. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

struct DbInner {
    path: PathBuf,
    idle: Mutex<Vec<Store>>,
}

impl Db {
    /// Opens (or creates) the database at `path` and brings its schema up to date. Blocking.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let first = Store::open(path)?;
        Ok(Self {
            inner: Arc::new(DbInner {
                path: path.to_path_buf(),
                idle: Mutex::new(vec![first]),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A connection: an idle one, or a new one. Blocking: call it from a blocking thread.
    pub fn get(&self) -> Result<Pooled, StoreError> {
        let idle = self.inner.idle.lock().expect("bug: poisoned").pop();
        let store = match idle {
            Some(store) => store,
            None => Store::connect(&self.inner.path)?,
        };
        Ok(Pooled {
            store: Some(store),
            db: self.inner.clone(),
        })
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// A connection of a [`Db`]; it goes back to the pool when dropped.
pub struct Pooled {
    store: Option<Store>,
    db: Arc<DbInner>,
}

impl std::ops::Deref for Pooled {
    type Target = Store;
    fn deref(&self) -> &Store {
        self.store
            .as_ref()
            .expect("bug: a connection used after drop")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Store {
        self.store
            .as_mut()
            .expect("bug: a connection used after drop")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            let mut idle = self.db.idle.lock().expect("bug: poisoned");
            if idle.len() < MAX_IDLE {
                idle.push(store);
            }
        }
    }
}

impl Store {
    /// A connection to the database at `path` with the node's settings (WAL, a busy timeout),
    /// without looking at the schema: for a database [`Store::open`] has brought up to date.
    fn connect(path: &Path) -> Result<Self, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens (or creates) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let Store { mut conn, .. } = Self::connect(path)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(err)?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                supported,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|source| self.error(source))
    }

    /// Sets a node-level fact.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
            .map(drop)
            .map_err(|source| self.error(source))
    }

    /// Reads a node-level fact.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
            .map_err(|source| self.error(source))
    }

    pub(super) fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_db_checks_the_schema_once_and_hands_connections_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let (a, b) = (db.get().unwrap(), db.get().unwrap());
        a.set_meta("k", "v").unwrap();
        assert_eq!(b.meta("k").unwrap().as_deref(), Some("v"), "one database");
        assert_eq!(b.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop((a, b));
        assert_eq!(db.inner.idle.lock().unwrap().len(), 2, "both went back");
        let many: Vec<Pooled> = (0..MAX_IDLE + 3).map(|_| db.get().unwrap()).collect();
        drop(many);
        assert_eq!(
            db.inner.idle.lock().unwrap().len(),
            MAX_IDLE,
            "the pool is bounded"
        );
    }

    #[test]
    fn open_migrates_once_and_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        store.set_meta("k", "v1").unwrap();
        store.set_meta("k", "v2").unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.meta("k").unwrap().as_deref(), Some("v2"));
        assert_eq!(store.meta("missing").unwrap(), None);
    }

    #[test]
    fn newer_schema_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Store::open(&path).err().expect("must refuse");
        assert!(err.to_string().contains("upgrade iwant"), "{err}");
    }
}
