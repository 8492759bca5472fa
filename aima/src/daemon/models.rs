use std::path::Path;

use chrono::Utc;

use super::{Daemon, DaemonError};
use crate::domain::{Invalid, Model, ModelId, ModelSpec};
use crate::store::StoreError;

/// Fields of a model registration as the caller gave them, before validation.
#[derive(Debug, Clone, Default)]
pub struct ModelRequest {
    pub name: String,
    pub source: String,
    pub repo: Option<String>,
    pub path: Option<String>,
}

impl Daemon {
    /// Validates and stores a model; nothing is written when any check fails.
    pub async fn create_model(&self, request: ModelRequest) -> Result<Model, DaemonError> {
        let spec = ModelSpec::new(
            &request.name,
            &request.source,
            request.repo.as_deref(),
            request.path.as_deref(),
        )?;
        if let Some(path) = &spec.path {
            check_local_path(Path::new(path))?;
        }
        let model = self
            .store()
            .run(move |store| {
                // Eight hex digits collide rarely; a fresh id on collision keeps ids unique.
                let mut model = Model::register(spec, ModelId::random(), Utc::now());
                loop {
                    match store.insert_model(&model) {
                        Err(StoreError::Duplicate(_)) => model.id = ModelId::random(),
                        other => return other.map(|()| model),
                    }
                }
            })
            .await?;
        tracing::info!(id = %model.id, name = %model.name, source = %model.source, "model registered");
        Ok(model)
    }

    pub async fn list_models(&self) -> Result<Vec<Model>, DaemonError> {
        Ok(self.store().run(|store| store.list_models()).await?)
    }

    pub async fn get_model(&self, id: &str) -> Result<Model, DaemonError> {
        let id = parse_model_id(id)?;
        let lookup = id.clone();
        self.store()
            .run(move |store| store.get_model(&lookup))
            .await?
            .ok_or_else(|| model_not_found(&id))
    }

    /// Deletes a model that no service uses.
    pub async fn delete_model(&self, id: &str) -> Result<Model, DaemonError> {
        let model = self.get_model(id).await?;
        let target = model.id.clone();
        match self
            .store()
            .run(move |store| store.delete_model(&target))
            .await
        {
            Ok(true) => {}
            Ok(false) => return Err(model_not_found(&model.id)),
            // The foreign key is the one check, so a concurrent create cannot slip past it.
            Err(crate::store::StoreError::Referenced(_)) => {
                let target = model.id.clone();
                let users = self
                    .store()
                    .run(move |store| store.services_of_model(&target))
                    .await?;
                return Err(super::services::model_in_use(&model.id, &users));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(id = %model.id, "model deleted");
        Ok(model)
    }
}

/// A malformed id cannot name any model, so it is simply "not found".
fn parse_model_id(id: &str) -> Result<ModelId, DaemonError> {
    id.parse().map_err(|_: Invalid| DaemonError::NotFound {
        kind: "model",
        id: id.to_owned(),
    })
}

fn model_not_found(id: &ModelId) -> DaemonError {
    DaemonError::NotFound {
        kind: "model",
        id: id.to_string(),
    }
}

fn check_local_path(path: &Path) -> Result<(), Invalid> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Invalid::new(
            "path",
            format!(
                "path {} does not exist on the daemon's host; pass the directory or file of the weights",
                path.display()
            ),
        )),
        Err(e) => Err(Invalid::new(
            "path",
            format!("path {} cannot be read: {e}", path.display()),
        )),
    }
}
