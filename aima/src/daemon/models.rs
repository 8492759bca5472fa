use std::path::{Path, PathBuf};

use chrono::Utc;

use super::{Daemon, DaemonError};
use crate::domain::{
    EventKind, Invalid, Known, Model, ModelFacts, ModelId, ModelSource, ModelSpec,
};
use crate::store::StoreError;

/// Fields of a model registration as the caller gave them, before validation.
#[derive(Debug, Clone, Default)]
pub struct ModelRequest {
    pub name: String,
    pub source: String,
    pub repo: Option<String>,
    pub path: Option<String>,
    /// What the operator states for a model AIMA cannot read (or to correct it).
    pub size_bytes: Option<u64>,
    pub context_length: Option<u32>,
}

/// The longest context a model may state, in tokens.
const MAX_CONTEXT: u32 = 100_000_000;

impl Daemon {
    /// Validates and stores a model; nothing is written when any check fails.
    pub async fn create_model(&self, request: ModelRequest) -> Result<Model, DaemonError> {
        let spec = ModelSpec::new(
            &request.name,
            &request.source,
            request.repo.as_deref(),
            request.path.as_deref(),
        )?;
        let mut spec = spec;
        // A Hugging Face repository is asked after: one the hub does not have is refused
        // in its words; an unreachable hub (offline hosts) lets the registration go on.
        let mut unchecked = None;
        if spec.source == ModelSource::Huggingface
            && let Some(repo) = &spec.repo
        {
            let (hub, asked) = (self.hub(), repo.clone());
            let answer = tokio::task::spawn_blocking(move || hub.check(&asked))
                .await
                .unwrap_or_else(|e| Err(crate::models::hub::HubError::Unreachable(e.to_string())));
            match answer {
                Ok(()) => {}
                Err(crate::models::hub::HubError::NoSuchRepo(why)) => {
                    return Err(Invalid::new("repo", why).into());
                }
                Err(crate::models::hub::HubError::Unreachable(why)) => unchecked = Some(why),
            }
        }
        if let Some(path) = &spec.path {
            // Stored resolved, so the mount is the directory that was checked.
            spec.path = Some(
                self.local_model_path(Path::new(path))?
                    .display()
                    .to_string(),
            );
        }
        // The files are read before anything is stored: a bad file registers nothing.
        let mut facts = match &spec.path {
            Some(path) => {
                let path = PathBuf::from(path);
                // Every file read inside the model is held to the roots too.
                let roots = self.settings().model_roots.clone();
                tokio::task::spawn_blocking(move || {
                    crate::models::inspect(&path, &crate::models::ModelRoots::new(&roots))
                })
                .await
                .map_err(|e| {
                    DaemonError::Unavailable(format!("reading the model files failed: {e}"))
                })?
                .map_err(|e| Invalid::new("path", format!("model file {e}")))?
            }
            None => ModelFacts::default(),
        };
        if request.size_bytes == Some(0) {
            return Err(Invalid::new(
                "size_bytes",
                "a model's size cannot be 0; pass the bytes of its weights (or leave it out)",
            )
            .into());
        }
        if let Some(context) = request.context_length
            && !(1..=MAX_CONTEXT).contains(&context)
        {
            return Err(Invalid::new(
                "context_length",
                format!("context_length {context} is out of range; pass 1 to {MAX_CONTEXT} tokens"),
            )
            .into());
        }
        if let Some(size) = request.size_bytes {
            facts.size_bytes = Some(Known::new(size, "stated by the operator (size_bytes)"));
        }
        if let Some(context) = request.context_length {
            facts.context_length = Some(Known::new(
                context,
                "stated by the operator (context_length)",
            ));
        }
        let model = self
            .store()
            .run(move |store| {
                // Eight hex digits collide rarely; a fresh id on collision keeps ids unique.
                let mut model = Model::register(spec, ModelId::random(), Utc::now());
                model.facts = facts;
                loop {
                    match store.insert_model(&model) {
                        Err(StoreError::Duplicate(_)) => model.id = ModelId::random(),
                        other => return other.map(|()| model),
                    }
                }
            })
            .await?;
        tracing::info!(id = %model.id, name = %model.name, source = %model.source, "model registered");
        let from = model
            .repo
            .as_deref()
            .or(model.path.as_deref())
            .unwrap_or_default();
        self.events()
            .publish_model(
                &model.id,
                EventKind::Created,
                format!("registered {} from {} {from}", model.name, model.source),
            )
            .await;
        if let Some(why) = unchecked {
            tracing::warn!(model = %model.name, "repository not checked: {why}");
            self.events()
                .publish_model(
                    &model.id,
                    EventKind::Note,
                    format!("the repository was not checked: {why}"),
                )
                .await;
        }
        Ok(model)
    }

    pub async fn list_models(&self) -> Result<Vec<Model>, DaemonError> {
        Ok(self.store().run(|store| store.list_models()).await?)
    }

    pub async fn get_model(&self, id: &str) -> Result<Model, DaemonError> {
        let id = self.resolve_model(id).await?;
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
        self.events()
            .publish_model(
                &model.id,
                EventKind::Deleted,
                format!("deleted {}", model.name),
            )
            .await;
        Ok(model)
    }
}

impl Daemon {
    /// The model `reference` names: its id, its name, or a unique prefix of its id.
    async fn resolve_model(&self, reference: &str) -> Result<ModelId, DaemonError> {
        let wanted = reference.to_owned();
        let found = self
            .store()
            .run(move |store| store.find_model(&wanted))
            .await?;
        super::services::resolved("model", reference, found)
    }
}

fn model_not_found(id: &ModelId) -> DaemonError {
    DaemonError::NotFound {
        kind: "model",
        id: id.to_string(),
    }
}

impl Daemon {
    /// `path` with every symlink resolved, if it exists and lies under one of the model
    /// roots (`AIMA_MODEL_ROOTS`); anything else could mount any host file, such as the
    /// Docker socket, into an engine container.
    pub(super) fn local_model_path(&self, path: &Path) -> Result<PathBuf, Invalid> {
        let resolved = std::fs::canonicalize(path).map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "does not exist on the daemon's host".to_owned()
            } else {
                format!("cannot be read: {e}")
            };
            Invalid::new(
                "path",
                format!(
                    "path {} {why}; pass the directory or file of the weights",
                    path.display()
                ),
            )
        })?;
        let roots = &self.settings().model_roots;
        let inside = roots
            .iter()
            .filter_map(|root| std::fs::canonicalize(root).ok())
            .any(|root| resolved.starts_with(root));
        if !inside {
            let shown = if resolved == path {
                path.display().to_string()
            } else {
                format!("{} (resolved to {})", path.display(), resolved.display())
            };
            let listed = roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(":");
            return Err(Invalid::new(
                "path",
                format!(
                    "path {shown} is outside the model roots ({listed}); move or copy the weights under a root (a symlink would point outside still), or start the daemon with AIMA_MODEL_ROOTS={listed}:{}",
                    resolved.parent().unwrap_or(&resolved).display()
                ),
            ));
        }
        // A link may point at a name Docker cannot mount.
        let text = resolved.to_str().ok_or_else(|| {
            Invalid::new(
                "path",
                format!("path {} is not valid UTF-8; rename it", resolved.display()),
            )
        })?;
        if text.contains(':') || text.chars().any(crate::domain::is_unsafe_char) {
            return Err(Invalid::new(
                "path",
                format!(
                    "path {} contains ':' or control characters, which Docker cannot mount; rename the directory",
                    crate::domain::one_line(text)
                ),
            ));
        }
        Ok(resolved)
    }
}
