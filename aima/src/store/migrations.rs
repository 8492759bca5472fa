use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Schema changes in order; `PRAGMA user_version` records how many have been applied.
/// Append only: never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: models. `seq` gives a stable oldest-first order even within one millisecond.
    "CREATE TABLE models (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        id         TEXT NOT NULL UNIQUE,
        name       TEXT NOT NULL,
        source     TEXT NOT NULL,
        repo       TEXT,
        path       TEXT,
        status     TEXT NOT NULL,
        created_at TEXT NOT NULL
    ) STRICT;",
    // 2: services, their event history, and facts about this AIMA home.
    "CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
    CREATE TABLE services (
        seq                    INTEGER PRIMARY KEY AUTOINCREMENT,
        id                     TEXT NOT NULL UNIQUE,
        name                   TEXT NOT NULL,
        model_id               TEXT NOT NULL REFERENCES models(id) ON DELETE RESTRICT,
        engine                 TEXT NOT NULL,
        port                   INTEGER NOT NULL UNIQUE CHECK (port BETWEEN 1 AND 65535),
        status                 TEXT NOT NULL,
        status_reason          TEXT,
        container_id           TEXT,
        gpu_memory_utilization REAL,
        env                    TEXT NOT NULL,
        last_logs              TEXT,
        created_at             TEXT NOT NULL,
        updated_at             TEXT NOT NULL
    ) STRICT;
    CREATE INDEX services_model ON services(model_id);
    CREATE TABLE service_events (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        service_id TEXT NOT NULL,
        at         TEXT NOT NULL,
        kind       TEXT NOT NULL,
        detail     TEXT,
        message    TEXT NOT NULL
    ) STRICT;
    CREATE INDEX service_events_by_service ON service_events(service_id, seq);",
    // 3: where a service's engine is placed on a GPU, and how much memory it claims.
    "ALTER TABLE services ADD COLUMN gpu_uuid TEXT;
    ALTER TABLE services ADD COLUMN gpu_claim_mib INTEGER;",
];

/// The schema version this build writes.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

pub(super) fn apply(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > LATEST {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: current,
            known: LATEST,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        // Each migration and its version bump commit together, so a crash never leaves
        // a half-migrated schema.
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn fresh_database_reaches_latest_version_in_wal_mode() {
        let (_dir, store) = crate::store::temp_store();
        let conn = store.conn();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, LATEST);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("sync");
        assert_eq!(sync, 2, "synchronous=FULL");
    }

    #[test]
    fn reopening_is_idempotent() {
        let (dir, store) = crate::store::temp_store();
        drop(store);
        let again = Store::open(&dir.path().join("aima.db")).expect("reopen");
        assert_eq!(again.integrity_check().expect("check"), "ok");
    }

    #[test]
    fn newer_schema_is_refused() {
        let (dir, store) = crate::store::temp_store();
        store
            .conn()
            .pragma_update(None, "user_version", LATEST + 1)
            .expect("bump");
        drop(store);
        let err = Store::open(&dir.path().join("aima.db")).expect_err("must refuse");
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("upgrade aima"), "{err}");
    }
}
