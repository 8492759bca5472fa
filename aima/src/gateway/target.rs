//! Which service a request's `model` names: a service by name, or a model by name and
//! then its running service, else its default one, else its oldest.

use std::sync::{Arc, Mutex};

use crate::daemon::{Daemon, DaemonError};
use crate::domain::{Model, Service};

/// Models and services as of one store generation; rebuilt when any model or service
/// changes (created, updated, deleted, a status, measured facts), so routing a request
/// reads no database and never sees a stale picture.
#[derive(Debug, Default)]
pub(super) struct Catalog {
    generation: u64,
    pub models: Vec<Model>,
    pub services: Vec<Service>,
}

impl Catalog {
    /// The service that `name` routes to, or why none does.
    pub fn route(&self, name: &str) -> Result<&Service, Unroutable> {
        if let Some(service) = self.services.iter().find(|s| s.name == name) {
            return Ok(service);
        }
        let model = self
            .models
            .iter()
            .find(|m| m.name == name)
            .ok_or(Unroutable::Unknown)?;
        crate::domain::service_of_model(&self.services, &model.id).ok_or(Unroutable::NoService)
    }

    /// The metric labels of `service`: its model's name and its own.
    pub fn target_of(&self, service: &Service) -> super::metrics::Target {
        let model = self
            .models
            .iter()
            .find(|m| m.id == service.model_id)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        super::metrics::Target {
            model,
            service: service.name.clone(),
        }
    }

    /// Every name a request may send, for the "not found" message.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .models
            .iter()
            .map(|m| m.name.as_str())
            .chain(self.services.iter().map(|s| s.name.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// Why a name routes nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unroutable {
    Unknown,
    /// A model exists under that name but no service serves it.
    NoService,
}

/// The catalog, cached against the store's generation.
#[derive(Debug, Default)]
pub(super) struct CatalogCache(Mutex<Arc<Catalog>>);

impl CatalogCache {
    pub async fn current(&self, daemon: &Daemon) -> Result<Arc<Catalog>, DaemonError> {
        let generation = daemon.store().generation();
        {
            let cached = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if cached.generation == generation && generation != 0 {
                return Ok(Arc::clone(&cached));
            }
        }
        let fresh = Arc::new(Catalog {
            generation,
            services: daemon.list_services().await?,
            models: daemon.list_models().await?,
        });
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&fresh);
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::{ModelId, ModelSpec, ServiceId, ServiceStatus};

    fn model(name: &str) -> Model {
        let spec = ModelSpec::new(name, "ollama", Some("r"), None).expect("spec");
        Model::register(spec, ModelId::random(), Utc::now())
    }

    fn service(model: &Model, name: &str, status: ServiceStatus, default: bool) -> Service {
        let mut s = Service::create(
            ServiceId::random("vllm"),
            name.into(),
            model.id.clone(),
            "vllm".into(),
            8000,
            None,
            Vec::new(),
            Utc::now(),
        );
        s.status = status;
        s.serving.default = default;
        s
    }

    #[test]
    fn names_route_to_a_service_preferring_running_then_default_then_oldest() {
        let tiny = model("tiny");
        let lonely = model("lonely");
        let mut catalog = Catalog {
            generation: 1,
            models: vec![tiny.clone(), lonely],
            services: vec![
                service(&tiny, "tiny-a", ServiceStatus::Stopped, false),
                service(&tiny, "tiny-b", ServiceStatus::Stopped, true),
                service(&tiny, "tiny-c", ServiceStatus::Stopped, false),
            ],
        };
        let routed = |c: &Catalog, name: &str| c.route(name).map(|s| s.name.clone());
        assert_eq!(routed(&catalog, "tiny-c"), Ok("tiny-c".into()));
        assert_eq!(routed(&catalog, "tiny"), Ok("tiny-b".into()), "the default");
        catalog.services[2].status = ServiceStatus::Running;
        assert_eq!(
            routed(&catalog, "tiny"),
            Ok("tiny-c".into()),
            "the running one"
        );
        catalog.services[2].status = ServiceStatus::Failed;
        catalog.services[1].serving.default = false;
        assert_eq!(routed(&catalog, "tiny"), Ok("tiny-a".into()), "the oldest");
        assert_eq!(routed(&catalog, "lonely"), Err(Unroutable::NoService));
        assert_eq!(routed(&catalog, "nope"), Err(Unroutable::Unknown));
        // A model without a service is a name too: the gateway gives it one.
        assert_eq!(
            catalog.names(),
            ["lonely", "tiny", "tiny-a", "tiny-b", "tiny-c"]
        );
    }
}
