//! SQLite persistence: schema, migrations and queries. The only module that speaks SQL.
//!
//! rusqlite is blocking, so async callers go through [`Store::run`], which moves the
//! work onto tokio's blocking pool. One connection behind a mutex is enough: the daemon
//! is the single writer and every query is short.

mod lookup;
mod migrations;
mod models;
mod services;

pub use lookup::Lookup;
pub use services::{EVENTS_KEPT_PER_SERVICE, InsertServiceError};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

/// Errors from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than this aima understands ({known}); upgrade aima"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("a row with id {0} already exists")]
    Duplicate(String),
    /// Names are unique; `holder` is the id of the row that has it.
    #[error("the name '{name}' is taken by {holder}")]
    NameTaken { name: String, holder: String },
    /// Ports are unique too: another service holds this one.
    #[error("port {0} is held by another service")]
    PortHeld(u16),
    #[error("{0} is still referenced by other rows")]
    Referenced(String),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "database {path} is not writable: {reason}; fix its permissions (the daemon's user must own it), free disk space, or point AIMA_HOME elsewhere"
    )]
    NotWritable { path: PathBuf, reason: String },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Task(String),
}

/// A handle on the AIMA database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Bumped by every write to the models or services table, so readers can cache a
    /// listing (the service list, the gateway's routing catalog) until it changes.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        // SQLite opens a file it cannot write read-only and fails only at the first write;
        // a directory it cannot write breaks its journal. Say which, with the fix.
        for target in [Some(path), path.parent()].into_iter().flatten() {
            if target.exists()
                && let Err(errno) = nix::unistd::access(target, nix::unistd::AccessFlags::W_OK)
            {
                return Err(StoreError::NotWritable {
                    path: path.to_owned(),
                    reason: format!("{}: {}", target.display(), errno.desc().to_lowercase()),
                });
            }
        }
        let mut conn = Connection::open(path).map_err(open_err)?;
        configure(&conn).map_err(open_err)?;
        migrations::apply(&mut conn, path)?;
        // A read-only file opens and reads fine; find out now, not at the first write.
        check_writable(&conn).map_err(|e| StoreError::NotWritable {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
            generation: Arc::default(),
        })
    }

    /// One real write (the time into `meta`), to learn whether the database takes writes
    /// now: a full disk or a file that turned read-only fails it as it fails every write.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO meta (key, value) VALUES ('written_at', datetime('now'))
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [],
            )
            .map(drop)
            .map_err(|e| self.explain_refused_write(StoreError::Sql(e)))
    }

    /// A write the host refused (read-only file or file system, full disk, I/O error) as
    /// [`StoreError::NotWritable`], with the cause read off the host: SQLite says "disk
    /// I/O error" for a file that turned read-only under it. Other errors pass unchanged.
    fn explain_refused_write(&self, error: StoreError) -> StoreError {
        use rusqlite::ErrorCode as C;
        let StoreError::Sql(rusqlite::Error::SqliteFailure(failure, message)) = &error else {
            return error;
        };
        if !matches!(
            failure.code,
            C::ReadOnly | C::DiskFull | C::SystemIoFailure | C::CannotOpen
        ) {
            return error;
        }
        let sqlite = message.clone().unwrap_or_else(|| failure.to_string());
        StoreError::NotWritable {
            path: self.path.clone(),
            reason: refused_write_reason(failure.code, &sqlite, HostFacts::of(&self.path)),
        }
    }

    /// True when the error means the database cannot take writes right now (read-only
    /// file, full disk, I/O error), as opposed to a bug or a bad row.
    pub fn is_unavailable(error: &StoreError) -> bool {
        use rusqlite::ErrorCode as C;
        match error {
            StoreError::NotWritable { .. } => true,
            StoreError::Sql(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                C::ReadOnly | C::DiskFull | C::SystemIoFailure | C::CannotOpen | C::DatabaseBusy
            ),
            _ => false,
        }
    }

    /// Changes whenever a model or service row changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(super) fn changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs blocking database work off the async runtime.
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            work(&store).map_err(|e| store.explain_refused_write(e))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// `PRAGMA integrity_check`: "ok" for a healthy file.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self
            .conn()
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))?)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (every write is
        // one transaction), so a poisoned lock is safe to keep using.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One real write, rolled into the meta table.
fn check_writable(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('opened_at', datetime('now'))
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [],
    )
    .map(drop)
}

/// What the host says about the database's file, its WAL and its file system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct HostFacts {
    read_only_file_system: bool,
    disk_full: bool,
    /// The database file, its WAL or its directory refuses writes (`access(W_OK)`; root
    /// passes that check, so this is for the daemon's ordinary user).
    read_only_file: bool,
}

impl HostFacts {
    fn of(path: &Path) -> Self {
        use nix::sys::statvfs::{FsFlags, statvfs};
        use nix::unistd::{AccessFlags, access};
        let dir = path.parent().unwrap_or(Path::new("."));
        let fs = statvfs(dir).ok();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Self {
            read_only_file_system: fs
                .as_ref()
                .is_some_and(|fs| fs.flags().contains(FsFlags::ST_RDONLY)),
            disk_full: fs.as_ref().is_some_and(|fs| fs.blocks_available() == 0),
            read_only_file: [path, Path::new(&wal), dir]
                .into_iter()
                .any(|p| p.exists() && access(p, AccessFlags::W_OK).is_err()),
        }
    }
}

/// Why a write failed, in the host's words first, then SQLite's own.
fn refused_write_reason(code: rusqlite::ErrorCode, sqlite: &str, host: HostFacts) -> String {
    let cause = if host.read_only_file_system {
        "read-only file system"
    } else if host.read_only_file {
        "read-only file"
    } else if host.disk_full || code == rusqlite::ErrorCode::DiskFull {
        "the disk is full"
    } else if code == rusqlite::ErrorCode::ReadOnly {
        "read-only file"
    } else {
        return sqlite.to_owned();
    };
    format!("{cause} (sqlite: {sqlite})")
}

/// Per-connection settings. WAL persists in the file; the rest must be set on every open.
/// `synchronous=FULL` in WAL mode keeps every acknowledged commit across a crash and
/// across power loss too, at the cost of one fsync per commit — a fair price at the
/// daemon's write rate.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    debug_assert_eq!(mode, "wal");
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
}

#[cfg(test)]
pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("aima.db")).expect("open store");
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_write_says_what_the_host_refused() {
        use rusqlite::ErrorCode as C;
        let io = "disk I/O error";
        let facts = |read_only_file_system, disk_full, read_only_file| HostFacts {
            read_only_file_system,
            disk_full,
            read_only_file,
        };
        let cases = [
            (
                C::SystemIoFailure,
                facts(true, false, false),
                "read-only file system (sqlite: disk I/O error)",
            ),
            (
                C::SystemIoFailure,
                facts(false, false, true),
                "read-only file (sqlite: disk I/O error)",
            ),
            (
                C::ReadOnly,
                HostFacts::default(),
                "read-only file (sqlite: disk I/O error)",
            ),
            (
                C::SystemIoFailure,
                facts(false, true, false),
                "the disk is full (sqlite: disk I/O error)",
            ),
            (
                C::DiskFull,
                HostFacts::default(),
                "the disk is full (sqlite: disk I/O error)",
            ),
            (C::SystemIoFailure, HostFacts::default(), "disk I/O error"),
        ];
        for (code, host, expected) in cases {
            assert_eq!(
                refused_write_reason(code, io, host),
                expected,
                "{code:?} {host:?}"
            );
        }
    }

    #[test]
    fn a_writable_database_passes_the_write_check() {
        let (_dir, store) = temp_store();
        store.check_writable().expect("writable");
        assert_eq!(HostFacts::of(store.path()), HostFacts::default());
    }
}
