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
    // 4: names are unique, so requests can name a model or a service. Older databases
    // may hold duplicates: the later ones get their id's hex as a suffix.
    "UPDATE models SET name = name || '-' || substr(id, -8)
        WHERE seq NOT IN (SELECT MIN(seq) FROM models GROUP BY name);
    CREATE UNIQUE INDEX models_name ON models(name);
    UPDATE services SET name = name || '-' || substr(id, -8)
        WHERE seq NOT IN (SELECT MIN(seq) FROM services GROUP BY name);
    CREATE UNIQUE INDEX services_name ON services(name);",
    // 5: how the model gateway starts, shares and unloads each service.
    "ALTER TABLE services ADD COLUMN idle_timeout_ms INTEGER;
    ALTER TABLE services ADD COLUMN load_timeout_ms INTEGER NOT NULL DEFAULT 600000;
    ALTER TABLE services ADD COLUMN max_concurrency INTEGER;
    ALTER TABLE services ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE services ADD COLUMN is_default INTEGER NOT NULL DEFAULT 0;",
    // 6: events are about a service or a model (created, deleted).
    "ALTER TABLE service_events RENAME TO events;
    ALTER TABLE events RENAME COLUMN service_id TO subject;
    DROP INDEX service_events_by_service;
    CREATE INDEX events_by_subject ON events(subject, seq);",
    // 7: self-healing: restart policy and bookkeeping, per-service health settings.
    "ALTER TABLE services ADD COLUMN restart_policy TEXT NOT NULL DEFAULT 'on-failure:5';
    ALTER TABLE services ADD COLUMN restarts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE services ADD COLUMN restarts_in_a_row INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE services ADD COLUMN next_restart_at TEXT;
    ALTER TABLE services ADD COLUMN last_exit_code INTEGER;
    ALTER TABLE services ADD COLUMN running_since TEXT;
    ALTER TABLE services ADD COLUMN start_timeout_ms INTEGER;
    ALTER TABLE services ADD COLUMN health_interval_ms INTEGER NOT NULL DEFAULT 2000;
    ALTER TABLE services ADD COLUMN health_retries INTEGER NOT NULL DEFAULT 5;",
    // 8: what AIMA read from a model's files (or was told), as JSON with provenance.
    "ALTER TABLE models ADD COLUMN facts TEXT NOT NULL DEFAULT '{}';",
    // 9: the GPU a service is pinned to (`service create --gpu N`), and the share of
    // its GPU a start chose by the model's size when none was given.
    "ALTER TABLE services ADD COLUMN gpu_index INTEGER;
    ALTER TABLE services ADD COLUMN placed_share REAL;",
];

/// The migration that makes names unique (renaming later duplicates).
const UNIQUE_NAMES: usize = 4;

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
        if index + 1 == UNIQUE_NAMES {
            report_duplicate_names(conn);
        }
        // Each migration and its version bump commit together, so a crash never leaves
        // a half-migrated schema.
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Says once, before they are renamed, which names were held more than once.
fn report_duplicate_names(conn: &Connection) {
    for table in ["models", "services"] {
        let duplicates: Vec<String> = conn
            .prepare(&format!(
                "SELECT name || ' (' || COUNT(*) || ' times)' FROM {table} GROUP BY name HAVING COUNT(*) > 1"
            ))
            .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect())
            .unwrap_or_default();
        if !duplicates.is_empty() {
            tracing::warn!(
                "names must be unique now: {table} named {} keep the name on the oldest; the others get their id's last 8 characters as a suffix",
                duplicates.join(", ")
            );
        }
    }
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
    fn duplicate_names_of_older_databases_get_suffixes() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("aima.db");
        let mut conn = Connection::open(&path).expect("open");
        for (index, sql) in MIGRATIONS.iter().enumerate().take(UNIQUE_NAMES - 1) {
            conn.execute_batch(sql).expect("old migration");
            conn.pragma_update(None, "user_version", index as i64 + 1)
                .expect("version");
        }
        for id in ["model-0000000a", "model-0000000b", "model-0000000c"] {
            conn.execute(
                "INSERT INTO models (id, name, source, repo, status, created_at)
                 VALUES (?1, 'tiny', 'ollama', 'tiny', 'registered', '2026-01-01T00:00:00.000Z')",
                [id],
            )
            .expect("insert");
        }
        apply(&mut conn, &path).expect("migrate");
        let names: Vec<String> = conn
            .prepare("SELECT name FROM models ORDER BY seq")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("names");
        assert_eq!(names, ["tiny", "tiny-0000000b", "tiny-0000000c"]);
        let again = conn.execute(
            "INSERT INTO models (id, name, source, repo, status, created_at)
             VALUES ('model-0000000d', 'tiny', 'ollama', 'tiny', 'registered', 'x')",
            [],
        );
        assert!(again.is_err(), "the name is unique from now on");
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
