//! Finding a row by what a person types: its id, its name, or a unique prefix of its id
//! (as docker accepts a short container id).

use rusqlite::OptionalExtension;

use super::{Store, StoreError};

/// What a reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(String),
    /// Several ids start with the reference (at most a few are listed).
    Ambiguous(Vec<String>),
    Missing,
}

/// Ids listed when a prefix is ambiguous.
const AMBIGUOUS_SHOWN: usize = 5;

impl Store {
    /// The model `reference` names: an id, a name, or a unique id prefix, in that order.
    pub fn find_model(&self, reference: &str) -> Result<Lookup, StoreError> {
        self.find("models", reference)
    }

    /// The service `reference` names: an id, a name, or a unique id prefix, in that order.
    pub fn find_service(&self, reference: &str) -> Result<Lookup, StoreError> {
        self.find("services", reference)
    }

    /// `base`, or `base-N` with the lowest N from 2 that no service is named, in one query
    /// however many there are.
    pub fn free_service_name(&self, base: &str) -> Result<String, StoreError> {
        let conn = self.conn();
        let taken: Vec<String> = conn
            .prepare_cached(
                "SELECT name FROM services WHERE name = ?1 OR substr(name, 1, length(?1) + 1) = ?1 || '-'",
            )?
            .query_map([base], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if !taken.iter().any(|n| n == base) {
            return Ok(base.to_owned());
        }
        let used: std::collections::BTreeSet<u64> = taken
            .iter()
            .filter_map(|n| n.get(base.len() + 1..)?.parse().ok())
            .collect();
        let free = (2..).find(|n| !used.contains(n)).unwrap_or(2);
        Ok(format!("{base}-{free}"))
    }

    /// The id of the row of `table` whose name is `name`.
    pub(super) fn holder_of_name(&self, table: &str, name: &str) -> Result<String, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(&format!("SELECT id FROM {table} WHERE name = ?1"))?
            .query_row([name], |r| r.get(0))
            .optional()?
            .unwrap_or_else(|| "another row".to_owned()))
    }

    fn find(&self, table: &str, reference: &str) -> Result<Lookup, StoreError> {
        if reference.is_empty() {
            return Ok(Lookup::Missing);
        }
        let conn = self.conn();
        let exact: Option<String> = conn
            .prepare_cached(&format!(
                "SELECT id FROM {table} WHERE id = ?1
                 UNION ALL SELECT id FROM {table} WHERE name = ?1 LIMIT 1"
            ))?
            .query_row([reference], |r| r.get(0))
            .optional()?;
        if let Some(id) = exact {
            return Ok(Lookup::Found(id));
        }
        // substr, not LIKE: a reference holding % or _ must match literally.
        let mut matches: Vec<String> = conn
            .prepare_cached(&format!(
                "SELECT id FROM {table} WHERE substr(id, 1, length(?1)) = ?1 ORDER BY seq LIMIT {}",
                AMBIGUOUS_SHOWN + 1
            ))?
            .query_map([reference], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(match matches.len() {
            0 => Lookup::Missing,
            1 => Lookup::Found(matches.remove(0)),
            _ => Lookup::Ambiguous(matches),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::{Model, ModelId, ModelSpec};

    fn model(store: &Store, id: &str, name: &str) {
        let spec = ModelSpec::new(name, "ollama", Some("r"), None).expect("spec");
        let mut model = Model::register(spec, ModelId::random(), Utc::now());
        model.id = id.parse().expect("id");
        store.insert_model(&model).expect("insert");
    }

    #[test]
    fn ids_names_and_unique_prefixes_resolve() {
        let (_dir, store) = crate::store::temp_store();
        model(&store, "model-1a2b3c4d", "tiny");
        model(&store, "model-1a2b9999", "phi");
        model(&store, "model-77777777", "model-1a2b");
        let found = |r: &str| store.find_model(r).expect("find");
        assert_eq!(
            found("model-1a2b3c4d"),
            Lookup::Found("model-1a2b3c4d".into())
        );
        assert_eq!(found("tiny"), Lookup::Found("model-1a2b3c4d".into()));
        assert_eq!(found("model-1a2b3"), Lookup::Found("model-1a2b3c4d".into()));
        assert_eq!(found("model-7"), Lookup::Found("model-77777777".into()));
        // A name wins over a prefix it happens to look like.
        assert_eq!(found("model-1a2b"), Lookup::Found("model-77777777".into()));
        assert_eq!(
            found("model-1a"),
            Lookup::Ambiguous(vec!["model-1a2b3c4d".into(), "model-1a2b9999".into()])
        );
        for missing in ["", "nope", "model-2", "%", "model-1a2b3c4d0"] {
            assert_eq!(found(missing), Lookup::Missing, "{missing}");
        }
    }

    #[test]
    fn generated_service_names_take_the_lowest_free_suffix() {
        use crate::domain::{Service, ServiceId};
        let (_dir, store) = crate::store::temp_store();
        model(&store, "model-1a2b3c4d", "tiny");
        let mut port = 8000;
        let mut add = |name: &str| {
            port += 1;
            let service = Service::create(
                ServiceId::random("vllm"),
                name.into(),
                "model-1a2b3c4d".parse().expect("id"),
                "vllm".into(),
                port,
                None,
                Vec::new(),
                Utc::now(),
            );
            store.insert_service(&service).expect("insert");
        };
        let free = |store: &Store| store.free_service_name("tiny-vllm").expect("name");
        assert_eq!(free(&store), "tiny-vllm");
        add("tiny-vllm");
        add("tiny-vllm-2");
        add("tiny-vllm-4");
        add("tiny-vllm-x");
        assert_eq!(free(&store), "tiny-vllm-3");
    }
}
