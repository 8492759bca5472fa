use chrono::Utc;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::ports::{self, in_range, no_port_left, port_in_use};
use super::{Daemon, DaemonError};
use crate::domain::{
    EnvVar, EventKind, HealthChecks, Invalid, ModelId, RestartPolicy, Service, ServiceId,
    ServiceStatus, ServingPolicy, lowest_free_port, validate_gpu_memory_utilization,
    validate_service_name,
};
use crate::engines::Engines;
use crate::runtime::{LogChunk, LogQuery, RuntimeError};
use crate::store::{InsertServiceError, Lookup, StoreError};

/// Fields of a service creation as the caller gave them, before validation.
#[derive(Debug, Clone, Default)]
pub struct ServiceRequest {
    pub model_id: String,
    pub engine: String,
    pub name: Option<String>,
    pub port: Option<u16>,
    pub gpu_memory_utilization: Option<f64>,
    pub env: Vec<String>,
    pub idle_timeout: Option<String>,
    pub load_timeout: Option<String>,
    pub max_concurrency: Option<u32>,
    pub pinned: bool,
    pub default: bool,
    /// `no`, `on-failure[:MAX]` or `always`; default `on-failure:5`.
    pub restart: Option<String>,
    pub start_timeout: Option<String>,
    pub health_interval: Option<String>,
    pub health_retries: Option<u32>,
    /// The GPU it must run on; `None`: where its model fits best.
    pub gpu: Option<u32>,
}

/// What `service update` changes; absent fields keep their value.
#[derive(Debug, Clone, Default)]
pub struct ServiceUpdate {
    pub gpu_memory_utilization: Option<f64>,
    /// Replaces the whole environment.
    pub env: Option<Vec<String>>,
    /// `""` or `never` clears it.
    pub idle_timeout: Option<String>,
    pub load_timeout: Option<String>,
    pub max_concurrency: Option<u32>,
    pub pinned: Option<bool>,
    pub default: Option<bool>,
    pub restart: Option<String>,
    pub start_timeout: Option<String>,
    pub health_interval: Option<String>,
    pub health_retries: Option<u32>,
    /// `Some(None)` unpins it.
    pub gpu: Option<Option<u32>>,
    /// Only while the engine does not run.
    pub port: Option<u16>,
}

/// A service after `service update`, and what of the change waits for its next start.
#[derive(Debug, Clone)]
pub struct Updated {
    pub service: Service,
    /// Settings that shape the container (env, GPU share, start timeout): they apply when
    /// the engine starts next, since a running one keeps the container it has.
    pub at_next_start: Vec<&'static str>,
}

/// Where a service's logs come from: its live container, or the lines kept from the
/// last container that failed.
pub enum LogOutput {
    Live(BoxStream<'static, Result<LogChunk, RuntimeError>>),
    Saved(String),
}

impl std::fmt::Debug for LogOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Live(_) => f.write_str("LogOutput::Live"),
            Self::Saved(text) => write!(f, "LogOutput::Saved({} bytes)", text.len()),
        }
    }
}

/// How often a create retries after losing a port race to a concurrent create.
const PORT_RACE_RETRIES: usize = 64;

impl Daemon {
    /// Validates and stores a service in `creating`, holding its port from now on.
    pub async fn create_service(&self, request: ServiceRequest) -> Result<Service, DaemonError> {
        let model = self.get_model(&request.model_id).await?;
        if self.inner.engines.get(&request.engine).is_none() {
            return Err(Invalid::new(
                "engine_type",
                format!(
                    "unknown engine '{}'; expected one of {}",
                    request.engine,
                    Engines::names()
                ),
            )
            .into());
        }
        let gpu_memory_utilization = request
            .gpu_memory_utilization
            .map(validate_gpu_memory_utilization)
            .transpose()?;
        let serving = ServingPolicy::new(
            request.idle_timeout.as_deref(),
            request.load_timeout.as_deref(),
            request.max_concurrency,
            request.pinned,
            request.default,
        )?;
        let env = request
            .env
            .iter()
            .map(|e| EnvVar::requested(e))
            .collect::<Result<Vec<_>, _>>()?;
        let restart = match &request.restart {
            Some(text) => text.parse::<RestartPolicy>()?,
            None => RestartPolicy::default(),
        };
        let health = HealthChecks::with(
            HealthChecks::default(),
            request.start_timeout.as_deref(),
            request.health_interval.as_deref(),
            request.health_retries,
        )?;
        // A name the caller gave must be free; one we make up takes the next free suffix.
        let (base_name, generated) = match &request.name {
            Some(name) => (validate_service_name(name)?, false),
            None => (format!("{}-{}", model.name, request.engine), true),
        };
        let range = self.settings().port_range;
        if let Some(port) = request.port {
            in_range(port, range)?;
        }
        let engine = request.engine.clone();
        let gpu_index = request.gpu;
        let model_id = model.id.clone();
        let explicit = request.port;
        let service = self
            .store()
            .run(move |store| {
                let mut name = if generated {
                    store.free_service_name(&base_name)?
                } else {
                    base_name.clone()
                };
                for _ in 0..PORT_RACE_RETRIES {
                    let held = store.held_ports()?;
                    let port = match explicit {
                        Some(port) => port,
                        None => match lowest_free_port((range.first, range.last), &held, ports::is_free) {
                            Some(port) => port,
                            None => return Ok(Err(no_port_left(range, held.len()))),
                        },
                    };
                    if explicit.is_some() && !ports::is_free(port) {
                        return Ok(Err(port_in_use(port)));
                    }
                    let mut service = Service::create(
                        ServiceId::random(&engine),
                        name.clone(),
                        model_id.clone(),
                        engine.clone(),
                        port,
                        gpu_memory_utilization,
                        env.clone(),
                        Utc::now(),
                    );
                    service.serving = serving.clone();
                    service.gpu_index = gpu_index;
                    service.restart = restart;
                    service.health = health;
                    match store.insert_service(&service) {
                        Ok(()) => return Ok(Ok(service)),
                        Err(InsertServiceError::PortTaken(port)) if explicit.is_some() => {
                            return Ok(Err(DaemonError::Conflict(format!(
                                "port {port} is already assigned to another service; pick another --port or leave it out"
                            ))));
                        }
                        // Another create took this port between our read and insert: pick again.
                        Err(InsertServiceError::PortTaken(_)) => continue,
                        Err(InsertServiceError::NoSuchModel(id)) => {
                            return Ok(Err(DaemonError::NotFound { kind: "model", id }));
                        }
                        // A concurrent create took the name we picked: pick again.
                        Err(InsertServiceError::Store(StoreError::NameTaken { .. })) if generated => {
                            name = store.free_service_name(&base_name)?;
                            continue;
                        }
                        Err(InsertServiceError::Store(e @ StoreError::NameTaken { .. })) => {
                            return Ok(Err(e.into()));
                        }
                        Err(InsertServiceError::Store(e)) => return Err(e),
                    }
                }
                Ok(Err(DaemonError::Conflict(
                    "too many concurrent creates raced for ports; retry".to_owned(),
                )))
            })
            .await??;
        tracing::info!(id = %service.id, port = service.port, "service created");
        self.events()
            .publish(
                &service.id,
                EventKind::Status(ServiceStatus::Creating),
                format!(
                    "created on port {} for model {}",
                    service.port, service.model_id
                ),
            )
            .await;
        Ok(service)
    }

    /// Changes a service's settings in place, whatever its status. A running engine keeps
    /// its container, so what shapes the container waits for the next start; the answer
    /// says which.
    pub async fn update_service(
        &self,
        id: &str,
        update: ServiceUpdate,
    ) -> Result<Updated, DaemonError> {
        let id = self.resolve_service(id).await?;
        let mut service = self.load_service(&id).await?;
        let mut changed: Vec<String> = Vec::new();
        let mut shapes_container: Vec<&'static str> = Vec::new();
        if let Some(share) = update.gpu_memory_utilization {
            service.gpu_memory_utilization = Some(validate_gpu_memory_utilization(share)?);
            changed.push(format!("gpu-memory-utilization={share}"));
            shapes_container.push("gpu_memory_utilization");
        }
        if let Some(env) = &update.env {
            service.env = env
                .iter()
                .map(|e| EnvVar::requested(e))
                .collect::<Result<Vec<_>, _>>()?;
            changed.push(format!("env ({} entries)", service.env.len()));
            shapes_container.push("env");
        }
        if let Some(gpu) = update.gpu {
            service.gpu_index = gpu;
            changed.push(gpu.map_or("gpu=any".to_owned(), |g| format!("gpu={g}")));
            shapes_container.push("gpu");
        }
        if let Some(port) = update.port.filter(|p| *p != service.port) {
            in_range(port, self.settings().port_range)?;
            if !matches!(
                service.status,
                ServiceStatus::Creating | ServiceStatus::Stopped | ServiceStatus::Failed
            ) {
                return Err(DaemonError::Conflict(format!(
                    "{} is {}: its engine holds port {}; stop it first ('aima stop {}'), then change the port",
                    service.name, service.status, service.port, service.name
                )));
            }
            if !ports::is_free(port) {
                return Err(port_in_use(port));
            }
            service.port = port;
            changed.push(format!("port={port}"));
        }
        let format = |d: std::time::Duration| humantime::format_duration(d).to_string();
        let idle = match update.idle_timeout.as_deref().map(str::trim) {
            Some("" | "never") => None,
            Some(text) => Some(text.to_owned()),
            None => service.serving.idle_timeout.map(format),
        };
        let load = update
            .load_timeout
            .clone()
            .unwrap_or_else(|| format(service.serving.load_timeout));
        let serving = ServingPolicy::new(
            idle.as_deref(),
            Some(&load),
            update.max_concurrency.or(service.serving.max_concurrency),
            update.pinned.unwrap_or(service.serving.pinned),
            update.default.unwrap_or(service.serving.default),
        )?;
        if serving != service.serving {
            changed.push("serving".to_owned());
            service.serving = serving;
        }
        if let Some(text) = &update.restart {
            service.restart = text.parse::<RestartPolicy>()?;
            changed.push(format!("restart={}", service.restart));
        }
        let health = HealthChecks::with(
            service.health,
            update.start_timeout.as_deref(),
            update.health_interval.as_deref(),
            update.health_retries,
        )?;
        if health.start_timeout != service.health.start_timeout {
            shapes_container.push("start_timeout");
        }
        if health != service.health {
            changed.push("health checks".to_owned());
            service.health = health;
        }
        if changed.is_empty() {
            return Err(Invalid::new(
                "update",
                "nothing to change; pass at least one setting, such as --restart on-failure:3",
            )
            .into());
        }
        service.updated_at = Utc::now();
        let saved = service.clone();
        if !self
            .store()
            .run(move |store| store.save_service_settings(&saved))
            .await?
        {
            return Err(DaemonError::NotFound {
                kind: "service",
                id: id.to_string(),
            });
        }
        let live = matches!(
            service.status,
            ServiceStatus::Running | ServiceStatus::Starting
        );
        let at_next_start = if live { shapes_container } else { Vec::new() };
        let mut message = format!("settings updated: {}", changed.join(", "));
        if !at_next_start.is_empty() {
            message.push_str(&format!(
                "; {} apply at the next start",
                at_next_start.join(", ")
            ));
        }
        self.events()
            .publish(&service.id, EventKind::Note, message)
            .await;
        Ok(Updated {
            service,
            at_next_start,
        })
    }

    pub async fn list_services(&self) -> Result<Vec<Service>, DaemonError> {
        Ok(self.store().run(|store| store.list_services()).await?)
    }

    pub async fn get_service(&self, id: &str) -> Result<Service, DaemonError> {
        let id = self.resolve_service(id).await?;
        self.load_service(&id).await
    }

    pub(super) async fn load_service(&self, id: &ServiceId) -> Result<Service, DaemonError> {
        let lookup = id.clone();
        self.store()
            .run(move |store| store.get_service(&lookup))
            .await?
            .ok_or_else(|| DaemonError::NotFound {
                kind: "service",
                id: id.to_string(),
            })
    }

    /// Stops the service if needed, removes it and frees its port.
    pub async fn delete_service(&self, id: &str, force: bool) -> Result<Service, DaemonError> {
        let id = self.resolve_service(id).await?;
        // An engine at work is not deleted by a slip of the keyboard (docker rm -f, kubectl).
        let current = self.load_service(&id).await?;
        if !force
            && matches!(
                current.status,
                ServiceStatus::Running | ServiceStatus::Starting
            )
        {
            return Err(DaemonError::Conflict(format!(
                "service {id} is {}; stop it first ('aima stop {id}'), or force the delete ('aima service delete --force {id}')",
                current.status
            )));
        }
        let daemon = self.clone();
        // Stop and delete under one hold of the lock, so no start slips in between, in a
        // task of its own so a client hanging up cannot leave it half done.
        tokio::spawn(async move {
            let lock = daemon.cancel_start_and_lock(&id).await;
            let _guard = lock.lock().await;
            let mut service = daemon.load_service(&id).await?;
            daemon.stop_locked(&mut service, None).await?;
            let target = service.id.clone();
            daemon
                .store()
                .run(move |store| store.delete_service(&target))
                .await?;
            tracing::info!(id = %service.id, port = service.port, "service deleted");
            daemon
                .events()
                .publish(
                    &service.id,
                    EventKind::Deleted,
                    format!("deleted; port {} is free", service.port),
                )
                .await;
            Ok(service)
        })
        .await
        .map_err(|e| DaemonError::Unavailable(format!("the delete task failed: {e}")))?
    }

    /// The container's output, or the lines kept from its last container (after a stop
    /// or a failure) when none runs.
    /// `previous`: the lines kept from the container before the current one (after a
    /// restart, the crashed engine's), as `kubectl logs --previous`.
    pub async fn service_logs(
        &self,
        id: &str,
        query: LogQuery,
        previous: bool,
    ) -> Result<LogOutput, DaemonError> {
        let service = self.get_service(id).await?;
        if previous && query.follow {
            return Err(Invalid::new(
                "previous",
                "the previous container's logs are kept lines and cannot be followed; drop --follow",
            )
            .into());
        }
        let live = if previous {
            Ok(None)
        } else {
            self.own_container(&service).await
        };
        match live {
            Ok(Some(container)) => {
                let mut live = self.runtime().logs(&container.id, query).await?;
                if query.follow {
                    return Ok(LogOutput::Live(live));
                }
                // Docker is asked on the first read; a container removed in between
                // (a stop racing this request) falls back to the lines kept below.
                match live.next().await {
                    Some(Err(e)) => {
                        tracing::debug!(service = %service.id, "logs from the store: {e}");
                    }
                    first => {
                        let first = futures::stream::iter(first);
                        return Ok(LogOutput::Live(Box::pin(first.chain(live))));
                    }
                }
            }
            Ok(None) => {}
            // With Docker away, the kept lines still explain what happened last.
            Err(e) => tracing::debug!(service = %service.id, "logs from the store: {e}"),
        }
        let target = service.id.clone();
        let saved = self
            .store()
            .run(move |store| store.last_logs(&target))
            .await?;
        Ok(LogOutput::Saved(select_saved(
            &saved.unwrap_or_default(),
            &query,
        )))
    }
}

/// Splits Docker's RFC 3339 time off a line written with `timestamps`; lines kept by
/// older versions have none.
pub(super) fn split_timestamp(line: &str) -> (Option<chrono::DateTime<Utc>>, &str) {
    match line.split_once(' ') {
        Some((stamp, rest)) => match chrono::DateTime::parse_from_rfc3339(stamp) {
            Ok(at) => (Some(at.with_timezone(&Utc)), rest),
            Err(_) => (None, line),
        },
        None => (None, line),
    }
}

/// The kept lines `query` asks for, as `docker logs` would print them.
fn select_saved(saved: &str, query: &LogQuery) -> String {
    let since = query
        .since_unix_secs
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0));
    let lines: Vec<&str> = saved
        .lines()
        .filter(|line| match (since, split_timestamp(line).0) {
            (Some(since), Some(at)) => at >= since,
            _ => true,
        })
        .collect();
    let from = query.tail.map_or(0, |n| lines.len().saturating_sub(n));
    let mut text = String::new();
    for line in &lines[from..] {
        text.push_str(if query.timestamps {
            line
        } else {
            split_timestamp(line).1
        });
        text.push('\n');
    }
    text
}

/// Turns a store lookup into an id, or the error that tells the caller what to type.
pub(super) fn resolved<T: std::str::FromStr>(
    kind: &'static str,
    reference: &str,
    found: Lookup,
) -> Result<T, DaemonError> {
    match found {
        Lookup::Found(id) => id.parse().map_err(|_| {
            DaemonError::Store(crate::store::StoreError::Corrupt(format!(
                "{kind} id '{id}' in the database"
            )))
        }),
        Lookup::Missing => Err(DaemonError::NotFound {
            kind,
            id: crate::domain::one_line(reference),
        }),
        Lookup::Ambiguous(ids) => Err(DaemonError::Conflict(format!(
            "'{}' is the start of several {kind} ids ({}); give more of the id, or the name",
            crate::domain::one_line(reference),
            ids.join(", ")
        ))),
    }
}

/// Services keep their model; deleting it first would orphan them.
pub(super) fn model_in_use(model: &ModelId, services: &[String]) -> DaemonError {
    DaemonError::Conflict(format!(
        "model {model} is used by {}; delete {} first",
        services.join(", "),
        if services.len() == 1 {
            "that service"
        } else {
            "those services"
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEPT: &str = "2026-12-02T10:00:00.000000001Z INFO: loading\n2026-12-02T10:05:00.5Z INFO: ready\n2026-12-02T10:09:00Z INFO: Shutting down\n";

    #[test]
    fn kept_lines_honour_since_tail_and_timestamps_as_docker_logs_does() {
        let all = LogQuery::default();
        assert_eq!(
            select_saved(KEPT, &all),
            "INFO: loading\nINFO: ready\nINFO: Shutting down\n"
        );
        let since = chrono::DateTime::parse_from_rfc3339("2026-12-02T10:05:00Z")
            .expect("time")
            .timestamp();
        let query = LogQuery {
            since_unix_secs: Some(since),
            ..LogQuery::default()
        };
        assert_eq!(
            select_saved(KEPT, &query),
            "INFO: ready\nINFO: Shutting down\n"
        );
        let query = LogQuery {
            tail: Some(1),
            timestamps: true,
            ..LogQuery::default()
        };
        assert_eq!(
            select_saved(KEPT, &query),
            "2026-12-02T10:09:00Z INFO: Shutting down\n"
        );
        // Lines kept before timestamps were: shown, never filtered out.
        assert_eq!(
            select_saved(
                "old line\n",
                &LogQuery {
                    since_unix_secs: Some(since),
                    ..all
                }
            ),
            "old line\n"
        );
        assert_eq!(select_saved("", &all), "");
    }
}
