//! A model's name is enough: commands that take a service take the name of the model it
//! serves, and a model with no service gets one when the gateway or `aima run` asks.

use super::services::resolved;
use super::{Daemon, DaemonError, ServiceRequest};
use crate::domain::{EventKind, Service, ServiceId, service_of_model};
use crate::store::Lookup;

/// Who asked for a service to be made for a model, for the event that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// A gateway request named the model.
    Gateway,
    /// `aima run` (or the API's ensure route) named it.
    Run,
}

impl Daemon {
    /// The service `reference` names: its id, its name, a unique prefix of its id, or
    /// the name of a model (the service a request for that model goes to).
    pub(super) async fn resolve_service(&self, reference: &str) -> Result<ServiceId, DaemonError> {
        let wanted = reference.to_owned();
        let (found, model) = self
            .store()
            .run(move |store| {
                let found = store.find_service(&wanted)?;
                let model = match found {
                    Lookup::Missing => match store.find_model(&wanted)? {
                        Lookup::Found(id) => Some(id),
                        _ => None,
                    },
                    _ => None,
                };
                Ok((found, model))
            })
            .await?;
        let Some(model) = model else {
            return resolved("service", reference, found);
        };
        let model = self.get_model(&model).await?;
        let services = self.list_services().await?;
        match service_of_model(&services, &model.id) {
            Some(service) => Ok(service.id.clone()),
            None => Err(no_service(&model.name)),
        }
    }

    /// The service that serves `model` (an id, a name or an id prefix): the one the
    /// gateway routes its name to, or a new one with the engine its files call for,
    /// placed at start where it fits best. A service's name is taken too. Returns the
    /// service and whether it was made now.
    pub async fn ensure_service(
        &self,
        reference: &str,
        asker: Asker,
    ) -> Result<(Service, bool), DaemonError> {
        let model = match self.get_model(reference).await {
            Ok(model) => model,
            Err(unknown @ DaemonError::NotFound { .. }) => {
                return match self.get_service(reference).await {
                    Ok(service) => Ok((service, false)),
                    Err(_) => Err(unknown),
                };
            }
            Err(e) => return Err(e),
        };
        // One at a time, so two requests for a cold model make one service.
        let _one = self.inner.ensuring.lock().await;
        let services = self.list_services().await?;
        if let Some(service) = service_of_model(&services, &model.id) {
            return Ok((service.clone(), false));
        }
        let engine = crate::engines::default_engine_for(&model);
        let service = self
            .create_service(ServiceRequest {
                model_id: model.id.to_string(),
                engine: engine.to_owned(),
                ..ServiceRequest::default()
            })
            .await?;
        let why = match asker {
            Asker::Gateway => format!(
                "created by the gateway: a request named model {}, which had no service (AIMA_GATEWAY_AUTO_CREATE=false turns this off)",
                model.name
            ),
            Asker::Run => format!("created by 'aima run {}'", model.name),
        };
        self.events()
            .publish(
                &service.id,
                EventKind::Note,
                format!("{why}; engine {engine}, the one its files call for"),
            )
            .await;
        Ok((service, true))
    }

    /// With `--if-not-exists`: the service `request` would make when one like it is
    /// there already (the name it asks for, or else the model's service of its engine).
    pub async fn existing_service(
        &self,
        request: &ServiceRequest,
    ) -> Result<Option<Service>, DaemonError> {
        let model = self.get_model(&request.model_id).await?;
        let services = self.list_services().await?;
        let found = match &request.name {
            Some(name) => services.into_iter().find(|s| &s.name == name),
            None => services
                .into_iter()
                .find(|s| s.model_id == model.id && s.engine == request.engine),
        };
        match found {
            Some(s) if s.model_id != model.id || s.engine != request.engine => {
                Err(DaemonError::Conflict(format!(
                    "the name '{}' is taken by {}, which serves another model or engine; pick another --name",
                    s.name, s.id
                )))
            }
            found => Ok(found),
        }
    }
}

/// A model named where a service is wanted, with nothing serving it.
pub(super) fn no_service(model: &str) -> DaemonError {
    DaemonError::Missing(format!(
        "model '{model}' has no service; create one with 'aima run {model}' or 'aima service create --model-id {model} --engine-type ENGINE'"
    ))
}
