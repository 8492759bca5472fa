use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError};
use crate::domain::{Model, ModelId};

const COLUMNS: &str = "id, name, source, repo, path, status, created_at, facts";

impl Store {
    /// Inserts a model; fails with [`StoreError::Duplicate`] if its id is taken and
    /// [`StoreError::NameTaken`] if its name is.
    pub fn insert_model(&self, model: &Model) -> Result<(), StoreError> {
        let result = self.conn().execute(
            "INSERT INTO models (id, name, source, repo, path, status, created_at, facts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                model.id.as_str(),
                model.name,
                model.source.as_str(),
                model.repo,
                model.path,
                model.status.as_str(),
                format_time(model.created_at),
                serde_json::to_string(&model.facts).unwrap_or_else(|_| "{}".to_owned()),
            ],
        );
        match result {
            Ok(_) => {
                self.changed();
                Ok(())
            }
            Err(rusqlite::Error::SqliteFailure(e, msg))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                if msg.is_some_and(|m| m.contains("models.name")) {
                    Err(StoreError::NameTaken {
                        name: model.name.clone(),
                        holder: self.holder_of_name("models", &model.name)?,
                    })
                } else {
                    Err(StoreError::Duplicate(model.id.to_string()))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// All models, oldest first.
    pub fn list_models(&self) -> Result<Vec<Model>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM models ORDER BY seq"))?;
        let rows = stmt.query_map([], RawModel::from_row)?;
        rows.map(|raw| raw?.into_model()).collect()
    }

    pub fn get_model(&self, id: &ModelId) -> Result<Option<Model>, StoreError> {
        let raw = self
            .conn()
            .prepare_cached(&format!("SELECT {COLUMNS} FROM models WHERE id = ?1"))?
            .query_row([id.as_str()], RawModel::from_row)
            .optional()?;
        raw.map(RawModel::into_model).transpose()
    }

    /// Replaces what is known of a model (a measurement joins its facts).
    /// A pulled model's files: where they are, and what was read from them.
    pub fn set_model_files(
        &self,
        id: &ModelId,
        path: &str,
        facts: &crate::domain::ModelFacts,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE models SET path = ?2, facts = ?3 WHERE id = ?1",
            params![
                id.as_str(),
                path,
                serde_json::to_string(facts).unwrap_or_else(|_| "{}".to_owned())
            ],
        )?;
        self.changed();
        Ok(())
    }

    pub fn update_model_facts(
        &self,
        id: &ModelId,
        facts: &crate::domain::ModelFacts,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE models SET facts = ?2 WHERE id = ?1",
            params![
                id.as_str(),
                serde_json::to_string(facts).unwrap_or_else(|_| "{}".to_owned())
            ],
        )?;
        // Services show their model's estimate: a cached listing is stale now.
        self.changed();
        Ok(())
    }

    /// Deletes a model; returns whether it existed. A model that services still use is
    /// refused by the foreign key ([`StoreError::Referenced`]), even if a service was
    /// created after the caller checked.
    pub fn delete_model(&self, id: &ModelId) -> Result<bool, StoreError> {
        match self
            .conn()
            .execute("DELETE FROM models WHERE id = ?1", [id.as_str()])
        {
            Ok(n) => {
                self.changed();
                Ok(n == 1)
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Referenced(id.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

pub(super) fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(super) fn parse_time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("timestamp '{s}': {e}")))
}

/// A row as stored, before its text columns are parsed back into domain types.
struct RawModel {
    id: String,
    name: String,
    source: String,
    repo: Option<String>,
    path: Option<String>,
    status: String,
    created_at: String,
    facts: String,
}

impl RawModel {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            source: row.get(2)?,
            repo: row.get(3)?,
            path: row.get(4)?,
            status: row.get(5)?,
            created_at: row.get(6)?,
            facts: row.get(7)?,
        })
    }

    fn into_model(self) -> Result<Model, StoreError> {
        let corrupt =
            |e: crate::domain::Invalid| StoreError::Corrupt(format!("model {}: {e}", self.id));
        Ok(Model {
            id: self.id.parse().map_err(corrupt)?,
            source: self.source.parse().map_err(corrupt)?,
            status: self.status.parse().map_err(corrupt)?,
            created_at: parse_time(&self.created_at)?,
            facts: serde_json::from_str(&self.facts)
                .map_err(|e| StoreError::Corrupt(format!("model {}: facts: {e}", self.id)))?,
            name: self.name,
            repo: self.repo,
            path: self.path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModelSpec;
    use crate::store::temp_store;

    fn model(name: &str) -> Model {
        let spec = ModelSpec::new(name, "ollama", Some("tinyllama"), None).expect("valid");
        Model::register(spec, ModelId::random(), Utc::now())
    }

    #[test]
    fn models_round_trip_oldest_first() {
        let (_dir, store) = temp_store();
        let models: Vec<Model> = (0..5).map(|i| model(&format!("m{i}"))).collect();
        for m in &models {
            store.insert_model(m).expect("insert");
        }
        let listed = store.list_models().expect("list");
        // Timestamps keep millisecond precision, so compare after a round trip.
        let names: Vec<_> = listed.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["m0", "m1", "m2", "m3", "m4"]);
        let first = store
            .get_model(&models[0].id)
            .expect("get")
            .expect("exists");
        assert_eq!(first.id, models[0].id);
        assert_eq!(first.repo.as_deref(), Some("tinyllama"));
        assert_eq!(
            format_time(first.created_at),
            format_time(models[0].created_at)
        );
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let (_dir, store) = temp_store();
        let m = model("a");
        store.insert_model(&m).expect("insert");
        let mut same_id = model("b");
        same_id.id = m.id.clone();
        assert!(matches!(
            store.insert_model(&same_id),
            Err(StoreError::Duplicate(_))
        ));
        let mut same_name = model("a");
        same_name.id = ModelId::random();
        match store.insert_model(&same_name) {
            Err(StoreError::NameTaken { name, holder }) => {
                assert_eq!((name.as_str(), holder), ("a", m.id.to_string()));
            }
            other => panic!("expected NameTaken, got {other:?}"),
        }
        assert_eq!(store.list_models().expect("list").len(), 1);
    }

    #[test]
    fn creating_and_deleting_a_model_changes_the_generation() {
        let (_dir, store) = temp_store();
        let m = model("a");
        let before = store.generation();
        store.insert_model(&m).expect("insert");
        let inserted = store.generation();
        assert!(
            inserted > before,
            "a created model invalidates cached listings"
        );
        store.delete_model(&m.id).expect("delete");
        assert!(store.generation() > inserted, "so does a deleted one");
    }

    #[test]
    fn delete_reports_whether_the_model_existed() {
        let (_dir, store) = temp_store();
        let m = model("a");
        store.insert_model(&m).expect("insert");
        assert!(store.delete_model(&m.id).expect("delete"));
        assert!(!store.delete_model(&m.id).expect("delete again"));
        assert_eq!(store.get_model(&m.id).expect("get"), None);
    }

    #[test]
    fn committed_models_survive_reopen() {
        let (dir, store) = temp_store();
        let m = model("durable");
        store.insert_model(&m).expect("insert");
        drop(store);
        let reopened = Store::open(&dir.path().join("aima.db")).expect("reopen");
        assert_eq!(reopened.list_models().expect("list")[0].id, m.id);
    }
}
