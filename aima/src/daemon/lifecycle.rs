//! Service lifecycles: the start pipeline, stop, and failure handling.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Daemon, DaemonError, PortHolder, ports};
use crate::domain::{
    EventKind, Failure, FailureCause, Model, ModelSource, Service, ServiceId, ServiceStatus,
    StartPhase,
};
use crate::engines::Engine;
use crate::runtime::{ContainerInfo, ContainerSpec, RuntimeError};

/// Health polling starts fast so a quick engine is seen at once, then backs off: to
/// [`HEALTH_QUICK_POLL`] while a start is young (llama.cpp answers within a second, and
/// a start is measured against `docker run` polled as closely), to [`HEALTH_MAX_POLL`]
/// for a long load (vLLM's minutes).
const HEALTH_FIRST_POLL: Duration = Duration::from_millis(10);
const HEALTH_QUICK_POLL: Duration = Duration::from_millis(25);
const HEALTH_QUICK_FOR: Duration = Duration::from_secs(10);
const HEALTH_MAX_POLL: Duration = Duration::from_millis(250);
/// Time an engine gets to exit on SIGTERM before Docker kills it.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Longest a stop waits for the host port to become bindable again.
const PORT_RELEASE_DEADLINE: Duration = Duration::from_secs(10);
/// Attempts at the Docker side of a start when the cause is transient.
const START_ATTEMPTS: usize = 3;
/// Pause before the next attempt, times the attempt number.
const RETRY_PAUSE: Duration = Duration::from_millis(25);
/// Where a local model's weights appear inside the engine container.
const LOCAL_MODEL_PATH: &str = "/aima/model";
/// Back-off of a cleanup that Docker refused.
const CLEANUP_FIRST_RETRY: Duration = Duration::from_millis(500);
const CLEANUP_MAX_RETRY: Duration = Duration::from_secs(30);
/// The end of a stop's reason while a refused removal is retried in the background.
const RETRY_PROMISE: &str = "; AIMA keeps trying in the background";
/// Longest status reason kept; the full story is in the events and logs.
const REASON_MAX_CHARS: usize = 1000;
/// Log lines kept from a failed container.
const KEPT_LOG_LINES: usize = 100;

/// Who asked for a start: a caller that waits for its verdict (the operator, the
/// gateway), or the restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StartOrigin {
    Requested,
    Restart,
}

/// Why a start did not reach `running`.
#[derive(Debug)]
enum StartFailure {
    /// Stopped by the operator; the stop owns what happens next.
    Cancelled,
    Failed(Failure),
}

/// Why one attempt at launching the container failed.
#[derive(Debug)]
enum LaunchError {
    /// Retrying cannot help (the port is held, the image is missing).
    Fatal(Failure),
    Runtime(RuntimeError),
}

impl From<RuntimeError> for LaunchError {
    fn from(e: RuntimeError) -> Self {
        Self::Runtime(e)
    }
}

impl From<RuntimeError> for StartFailure {
    fn from(e: RuntimeError) -> Self {
        Self::Failed(Failure::new(FailureCause::Docker, e.to_string()))
    }
}

impl Daemon {
    /// Begins starting a service and returns at once with it in `starting`; the pipeline
    /// runs in the background and publishes each phase. Starting a running or starting
    /// service changes nothing.
    pub async fn start_service(&self, id: &str) -> Result<Service, DaemonError> {
        let id = self.resolve_service(id).await?;
        self.start_with(id, StartOrigin::Requested, None).await
    }

    /// Starts a service for `origin`. A restart passes the back-off it waited out and
    /// proceeds only if the service still waits for exactly that one (a stop or a start
    /// in between wins).
    pub(super) async fn start_with(
        &self,
        id: ServiceId,
        origin: StartOrigin,
        due: Option<chrono::DateTime<Utc>>,
    ) -> Result<Service, DaemonError> {
        // A start in flight holds the service's lock until the engine is healthy; asking
        // again answers at once instead of queueing behind it.
        if self.start_in_flight(&id) {
            return self.load_service(&id).await;
        }
        let guard = self.service_lock(&id).lock_owned().await;
        let mut service = self.load_service(&id).await?;
        if origin == StartOrigin::Restart
            && (service.status != ServiceStatus::Backoff || service.restarts.next_at != due)
        {
            return Ok(service);
        }
        if matches!(
            service.status,
            ServiceStatus::Running | ServiceStatus::Starting
        ) {
            return Ok(service);
        }
        if !service.status.can_start() {
            return Err(DaemonError::Conflict(format!(
                "service {id} is {}; wait for it to finish",
                service.status
            )));
        }
        // Registered before the first await, so a stop can always cancel this start.
        let cancel = CancellationToken::new();
        self.inner
            .starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), cancel.clone());
        if origin == StartOrigin::Restart {
            service.restarts.total += 1;
            self.metrics()
                .restarted(service.id.as_str(), &service.engine);
            self.events()
                .publish(
                    &id,
                    EventKind::Restarted,
                    format!(
                        "restart {} ({} in a row) after the back-off: {}",
                        service.restarts.total,
                        service.restarts.in_a_row,
                        service.status_reason.as_deref().unwrap_or("")
                    ),
                )
                .await;
        } else {
            // The operator (or a request) took over: earlier failures are forgotten.
            service.restarts.in_a_row = 0;
        }
        let prepared = self.prepare_start(&mut service).await;
        let (model, engine) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                self.inner
                    .starts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if origin == StartOrigin::Restart {
                    // Nobody waits for this start: the service itself must say why.
                    let failure = Failure::new(FailureCause::ModelMissing, e.to_string());
                    self.fail(&mut service, failure).await?;
                }
                return Err(e);
            }
        };
        let daemon = self.clone();
        let starting = service.clone();
        tokio::spawn(async move {
            // The lock moves into the task: no other lifecycle operation runs until it ends.
            let _guard = guard;
            daemon
                .run_start(starting, engine, model, cancel, origin)
                .await;
        });
        Ok(service)
    }

    pub(super) fn start_in_flight(&self, id: &ServiceId) -> bool {
        self.inner
            .starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// Checks the model and engine and records `starting`.
    async fn prepare_start(&self, service: &mut Service) -> Result<(Model, Engine), DaemonError> {
        let id = service.id.clone();
        self.events()
            .publish(
                &id,
                EventKind::Phase(StartPhase::Validate),
                "checking model and engine",
            )
            .await;
        let mut model = self
            .get_model(service.model_id.as_str())
            .await
            .map_err(|_| {
                DaemonError::Conflict(format!(
                    "model {} of service {id} no longer exists; delete the service",
                    service.model_id
                ))
            })?;
        // Checked again: the roots or the links under them may have changed since create.
        if let (ModelSource::Local, Some(path)) = (model.source, &model.path) {
            let resolved = self
                .local_model_path(std::path::Path::new(path))
                .map_err(|e| DaemonError::Conflict(format!("model {}: {e}", model.id)))?;
            model.path = Some(resolved.display().to_string());
        }
        let engine = self.inner.engines.get(&service.engine).ok_or_else(|| {
            DaemonError::Conflict(format!(
                "engine '{}' is not in this daemon's catalog",
                service.engine
            ))
        })?;
        self.set_status(service, ServiceStatus::Starting, None)
            .await?;
        Ok((model, engine))
    }

    async fn run_start(
        &self,
        service: Service,
        engine: Engine,
        model: Model,
        cancel: CancellationToken,
        origin: StartOrigin,
    ) {
        // Cancellation is checked between Docker calls, never in the middle of one: a
        // dropped `create` would still be carried out by Docker and leave a container
        // that the stop, already past its cleanup, never sees.
        let outcome = async {
            let placement = tokio::select! {
                placement = self.admit(&service, &engine, &model) => placement.map_err(|reason| StartFailure::Failed(Failure::new(FailureCause::GpuAdmission, reason)))?,
                () = cancel.cancelled() => return Err(StartFailure::Cancelled),
            };
            // The placement (and with it the GPU's loading turn) is held until the
            // engine is healthy or the start fails.
            self.start_pipeline(&service, &engine, &model, placement.as_ref(), &cancel).await
        }
        .await;
        self.finish_start(service, outcome, origin).await;
    }

    /// Continues a start the previous daemon began: its container runs, only the health
    /// wait is left.
    pub(super) async fn resume_start(
        &self,
        service: Service,
        engine: Engine,
        container_id: String,
    ) {
        let guard = self.service_lock(&service.id).lock_owned().await;
        // Between reconciliation and this lock a stop may have come: it wins.
        match self.load_service(&service.id).await {
            Ok(current) if current.status == ServiceStatus::Starting => {}
            _ => return,
        }
        let cancel = CancellationToken::new();
        self.inner
            .starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service.id.clone(), cancel.clone());
        let daemon = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let outcome = tokio::select! {
                outcome = daemon.wait_healthy(&service, &engine, &container_id) => outcome.map(|()| container_id),
                () = cancel.cancelled() => Err(StartFailure::Cancelled),
            };
            // Nobody waits for a start the previous daemon began.
            daemon
                .finish_start(service, outcome, StartOrigin::Restart)
                .await;
        });
    }

    /// Records how a start ended: running with its container, or failed with no container.
    async fn finish_start(
        &self,
        mut service: Service,
        outcome: Result<String, StartFailure>,
        origin: StartOrigin,
    ) {
        self.inner
            .starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&service.id);
        let result = match outcome {
            Ok(container_id) => {
                self.measure_gpu_memory(service.clone(), container_id.clone());
                self.measure_host_memory(service.clone(), container_id.clone());
                service.container_id = Some(container_id);
                service.restarts.running_since = Some(Utc::now());
                self.set_status(
                    &mut service,
                    ServiceStatus::Running,
                    Some("engine is healthy".to_owned()),
                )
                .await
            }
            // The stop that cancelled us removes the container and sets the status.
            Err(StartFailure::Cancelled) => Ok(()),
            Err(StartFailure::Failed(failure)) => {
                // A failed start leaves no container behind.
                self.clean_up_or_retry(&service).await;
                service.container_id = None;
                match origin {
                    // Whoever waits gets the verdict, not a loop.
                    StartOrigin::Requested => self.fail(&mut service, failure).await,
                    StartOrigin::Restart => {
                        self.fail_or_back_off(&mut service, failure, None).await
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::error!(service = %service.id, "cannot record the start's outcome: {e}");
        }
    }

    /// cleanup → port check → image → create → start, retried while the cause is
    /// transient, then health. Returns the container id once the engine answers.
    async fn start_pipeline(
        &self,
        service: &Service,
        engine: &Engine,
        model: &Model,
        placement: Option<&super::gpus::Placement>,
        cancel: &CancellationToken,
    ) -> Result<String, StartFailure> {
        let device = placement.and_then(|p| p.device.as_deref());
        let on_gpu = placement.is_some();
        // The engine takes the share its placement chose, when the service named none.
        let sized;
        let service = match placement.and_then(|p| p.share) {
            Some(share) => {
                sized = Service {
                    gpu_memory_utilization: Some(share),
                    ..service.clone()
                };
                &sized
            }
            None => service,
        };
        let mut attempts: Vec<String> = Vec::new();
        let failed = |mut attempts: Vec<String>, cause| {
            StartFailure::Failed(Failure::new(
                cause,
                every_attempt(std::mem::take(&mut attempts)),
            ))
        };
        let container_id = loop {
            if cancel.is_cancelled() {
                return Err(StartFailure::Cancelled);
            }
            match self.launch(service, engine, model, device, on_gpu).await {
                Ok(container_id) => break container_id,
                Err(LaunchError::Fatal(failure)) => {
                    attempts.push(failure.reason);
                    return Err(failed(attempts, failure.cause));
                }
                Err(LaunchError::Runtime(e))
                    if e.is_transient() && attempts.len() + 1 < START_ATTEMPTS =>
                {
                    attempts.push(e.to_string());
                    self.events()
                        .publish(
                            &service.id,
                            EventKind::Note,
                            format!("attempt {} failed: {e}; retrying", attempts.len()),
                        )
                        .await;
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_PAUSE * attempts.len() as u32) => {}
                        () = cancel.cancelled() => return Err(StartFailure::Cancelled),
                    }
                }
                Err(LaunchError::Runtime(e)) => {
                    attempts.push(e.to_string());
                    return Err(failed(attempts, FailureCause::Docker));
                }
            }
        };
        self.events()
            .publish(
                &service.id,
                EventKind::Phase(StartPhase::Health),
                format!(
                    "waiting for {} on port {}",
                    engine.spec.health_path, service.port
                ),
            )
            .await;
        // Waiting is safe to abandon: the container exists, and the stop removes it.
        tokio::select! {
            healthy = self.wait_healthy(service, engine, &container_id) => healthy?,
            () = cancel.cancelled() => return Err(StartFailure::Cancelled),
        }
        Ok(container_id)
    }

    /// One attempt at the Docker side of a start, leaving no container when it fails.
    async fn launch(
        &self,
        service: &Service,
        engine: &Engine,
        model: &Model,
        device: Option<&str>,
        on_gpu: bool,
    ) -> Result<String, LaunchError> {
        let id = &service.id;
        let publish = |phase: StartPhase, message: String| async move {
            self.events()
                .publish(id, EventKind::Phase(phase), message)
                .await;
        };

        publish(
            StartPhase::Cleanup,
            format!("removing leftovers of {}", service.container_name()),
        )
        .await;
        if let Some(obstacle) = self.remove_own_container(service).await? {
            return Err(LaunchError::Fatal(Failure::new(
                FailureCause::NameTaken,
                format!(
                    "{}; remove or rename it, then start again",
                    squatter_note(&obstacle)
                ),
            )));
        }

        publish(
            StartPhase::PortCheck,
            format!("checking host port {}", service.port),
        )
        .await;
        if let Some(holder) = self.port_holder(service.port).await {
            return Err(LaunchError::Fatal(port_conflict(service.port, &holder)));
        }

        let image = engine.image_for(on_gpu);
        publish(StartPhase::Image, format!("checking image {}", image)).await;
        if !self.runtime().image_present(image).await? {
            publish(StartPhase::Image, format!("pulling {}", image)).await;
            let events = self.events().clone();
            let sid = id.clone();
            let handle = tokio::runtime::Handle::current();
            let progress = move |line: String| {
                let (events, sid) = (events.clone(), sid.clone());
                handle.spawn(async move { events.publish(&sid, EventKind::Note, line).await });
            };
            self.runtime().pull_image(image, &progress).await.map_err(|e| {
                LaunchError::Fatal(Failure::new(FailureCause::ImageMissing, format!(
                    "image {} is not on this host and could not be pulled: {e}; build or load it, or set AIMA_ENGINE_IMAGE_{}",
                    image,
                    engine.spec.name.to_uppercase()
                )))
            })?;
        }

        let spec = self.container_spec(service, engine, model, device, on_gpu);
        publish(
            StartPhase::Create,
            format!("creating container {}", spec.name),
        )
        .await;
        let container_id = self.runtime().create_container(&spec).await?;
        publish(
            StartPhase::Start,
            format!("starting container {}", short(&container_id)),
        )
        .await;
        match self.runtime().start_container(&container_id).await {
            Ok(()) => Ok(container_id),
            Err(e) => {
                let _ = self.runtime().remove(&container_id, Duration::ZERO).await;
                match e {
                    // Docker's own words here are cryptic; name the holder instead.
                    RuntimeError::PortAllocated(_) => {
                        let holder = self
                            .port_holder(service.port)
                            .await
                            .unwrap_or(PortHolder::Unknown);
                        Err(LaunchError::Fatal(port_conflict(service.port, &holder)))
                    }
                    other => Err(other.into()),
                }
            }
        }
    }

    /// Polls the health path while watching the container: an exit fails the start at once,
    /// with the exit code, a diagnosis and the last log lines.
    async fn wait_healthy(
        &self,
        service: &Service,
        engine: &Engine,
        container_id: &str,
    ) -> Result<(), StartFailure> {
        let url = self.engine_url(service.port, engine.spec.health_path);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| {
                StartFailure::Failed(Failure::new(
                    FailureCause::Docker,
                    format!("cannot build the health client: {e}"),
                ))
            })?;
        let started = Instant::now();
        let deadline = service
            .health
            .start_timeout
            .unwrap_or(engine.spec.start_timeout);
        let poll = async {
            let mut pause = HEALTH_FIRST_POLL;
            loop {
                if let Ok(response) = http.get(&url).send().await
                    && response.status().is_success()
                {
                    return;
                }
                tokio::time::sleep(pause).await;
                let cap = if started.elapsed() < HEALTH_QUICK_FOR {
                    HEALTH_QUICK_POLL
                } else {
                    HEALTH_MAX_POLL
                };
                pause = (pause * 3 / 2).min(cap);
            }
        };
        tokio::select! {
            () = poll => {
                tracing::info!(service = %service.id, elapsed = ?started.elapsed(), "engine healthy");
                Ok(())
            }
            exit = self.runtime().wait_exit(container_id) => {
                let code = exit?;
                let logs = self.keep_last_logs(service, container_id).await;
                Err(StartFailure::Failed(exit_failure(FailureCause::ExitedDuringStart, "during start", code, engine, &logs)))
            }
            () = tokio::time::sleep(deadline) => Err(StartFailure::Failed(Failure::new(
                FailureCause::StartTimeout,
                format!(
                    "engine did not answer {} within {}; raise --start-timeout if its model takes longer to load",
                    engine.spec.health_path,
                    humantime::format_duration(deadline)
                ),
            ))),
        }
    }

    /// Stops a service from any status: cancels a start in flight, removes its container
    /// (only ever its own), and returns once the host port can be bound again.
    pub async fn stop_service(&self, id: &str) -> Result<Service, DaemonError> {
        self.stop_service_because(id, None).await
    }

    /// Like [`Daemon::stop_service`], recording why as the `stopped` status's reason (the
    /// gateway's idle unload and evictions say so).
    pub async fn stop_service_because(
        &self,
        id: &str,
        reason: Option<String>,
    ) -> Result<Service, DaemonError> {
        let id = self.resolve_service(id).await?;
        let daemon = self.clone();
        // Its own task: a client that hangs up (or a request timeout) must not leave the
        // service half-stopped.
        tokio::spawn(async move {
            let lock = daemon.cancel_start_and_lock(&id).await;
            let _guard = lock.lock().await;
            let mut service = daemon.load_service(&id).await?;
            daemon.stop_locked(&mut service, reason).await?;
            Ok(service)
        })
        .await
        .map_err(|e| DaemonError::Unavailable(format!("the stop task failed: {e}")))?
    }

    /// Cancels a start in flight and returns the service's lock, which the start releases
    /// as it winds down.
    pub(super) async fn cancel_start_and_lock(
        &self,
        id: &ServiceId,
    ) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        if let Some(start) = self
            .inner
            .starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            start.cancel();
        }
        self.service_lock(id)
    }

    /// Stops a service whose lock the caller holds: removes its container (only ever its
    /// own) and waits until the host port is free.
    pub(super) async fn stop_locked(
        &self,
        service: &mut Service,
        why: Option<String>,
    ) -> Result<(), DaemonError> {
        if service.status != ServiceStatus::Stopped {
            self.set_status(service, ServiceStatus::Stopping, None)
                .await?;
        }
        // The engine's last lines, its shutdown included, stay readable after the stop,
        // as after a failure: stop, keep them, then remove.
        let ours = self.own_container(service).await.ok().flatten();
        if let Some(container) = &ours
            && self.runtime().stop(&container.id, STOP_GRACE).await.is_ok()
        {
            self.keep_last_logs(service, &container.id).await;
        }
        match self.remove_own_container(service).await {
            Ok(None) => {}
            // Nothing of ours runs under that name, so the stop is done; the other
            // container is named, never touched.
            Ok(Some(obstacle)) => {
                self.events()
                    .publish(&service.id, EventKind::Note, squatter_note(&obstacle))
                    .await;
            }
            Err(e) => {
                let reason = format!("stop could not remove the container: {e}{RETRY_PROMISE}");
                self.fail(
                    service,
                    Failure::new(FailureCause::CleanupFailed, reason.clone()),
                )
                .await?;
                self.retry_cleanup(service.clone());
                return Err(DaemonError::Unavailable(reason));
            }
        }
        // Docker frees a published port a moment after its container goes; with no
        // container of ours, whoever holds the port is not ours to wait for.
        if ours.is_some() {
            self.wait_port_released(service.port).await;
        }
        service.container_id = None;
        if service.status != ServiceStatus::Stopped {
            let reason = match self.port_holder(service.port).await {
                Some(holder) => Some(format!(
                    "stopped, but port {} is still held by {holder}",
                    service.port
                )),
                None => why,
            };
            self.set_status(service, ServiceStatus::Stopped, reason)
                .await?;
        }
        Ok(())
    }

    /// Marks a running service failed because its container died outside AIMA's control;
    /// its restart policy may start it again.
    pub(super) async fn fail_running(
        &self,
        service_id: &ServiceId,
        container_id: &str,
        exit_code: Option<i64>,
    ) {
        self.fail_running_with(service_id, container_id, exit_code, |service, logs| match (
            exit_code,
            self.inner.engines.get(&service.engine),
        ) {
            (Some(code), Some(engine)) => {
                exit_failure(FailureCause::Crashed, "while running", code, &engine, logs)
            }
            _ => Failure::new(FailureCause::Vanished, "container was removed outside AIMA"),
        })
        .await;
    }

    /// Marks a running service failed because its engine stopped answering.
    pub(super) async fn fail_unhealthy(
        &self,
        service_id: &ServiceId,
        container_id: &str,
        reason: String,
    ) {
        self.fail_running_with(service_id, container_id, None, |_, _| {
            Failure::new(FailureCause::Unhealthy, reason)
        })
        .await;
    }

    /// The one way a running service turns `failed` outside a start: only if it still runs
    /// in `container_id` (stops and starts handle their own), keeping the container's last
    /// lines, removing it (a failed service has none) and recording the reason.
    async fn fail_running_with(
        &self,
        service_id: &ServiceId,
        container_id: &str,
        exit_code: Option<i64>,
        failure: impl FnOnce(&Service, &str) -> Failure,
    ) {
        let lock = self.service_lock(service_id);
        let _guard = lock.lock().await;
        let Ok(mut service) = self.load_service(service_id).await else {
            return;
        };
        if service.status != ServiceStatus::Running
            || service.container_id.as_deref() != Some(container_id)
        {
            return;
        }
        let logs = self.keep_last_logs(&service, container_id).await;
        let failure = failure(&service, &logs);
        self.clean_up_or_retry(&service).await;
        service.container_id = None;
        if let Err(e) = self
            .fail_or_back_off(&mut service, failure, exit_code)
            .await
        {
            tracing::error!(service = %service_id, "cannot record the failure: {e}");
        }
    }

    /// Removes a container of this instance that no start of this daemon created and that
    /// is not its service's running container.
    pub(super) async fn remove_if_stray(&self, service_id: &ServiceId, container_id: &str) {
        let starting = |d: &Self| {
            d.inner
                .starts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(service_id)
        };
        if starting(self) {
            return;
        }
        let lock = self.service_lock(service_id);
        let _guard = lock.lock().await;
        if starting(self) {
            return;
        }
        let ours = match self.load_service(service_id).await {
            Ok(service) => service
                .container_id
                .as_deref()
                .is_some_and(|c| c == container_id),
            Err(_) => false,
        };
        if !ours {
            tracing::info!(service = %service_id, container = short(container_id), "removing a stray container");
            if let Err(e) = self.runtime().remove(container_id, Duration::ZERO).await {
                tracing::warn!(service = %service_id, "cannot remove the stray container: {e}");
            }
        }
    }

    /// Records a failure: the `failed` status with its reason, counted by cause.
    pub(super) async fn fail(
        &self,
        service: &mut Service,
        failure: Failure,
    ) -> Result<(), DaemonError> {
        self.metrics().failed(&service.engine, failure.cause);
        self.inner
            .last_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service.id.clone(), failure.cause);
        self.set_status(service, ServiceStatus::Failed, Some(failure.reason))
            .await
    }

    /// The cause of the service's last failure, while this daemon runs.
    pub fn last_failure_cause(&self, id: &ServiceId) -> Option<FailureCause> {
        self.inner
            .last_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    pub(super) async fn set_status(
        &self,
        service: &mut Service,
        status: ServiceStatus,
        reason: Option<String>,
    ) -> Result<(), DaemonError> {
        // A reason quotes engine logs and host command lines: one line, bounded.
        let reason =
            reason.map(|r| crate::domain::shorten(&crate::domain::one_line(&r), REASON_MAX_CHARS));
        service.status = status;
        service.status_reason = reason.clone();
        if status != ServiceStatus::Backoff {
            service.restarts.next_at = None;
        }
        service.updated_at = Utc::now();
        let saved = service.clone();
        self.store()
            .run(move |store| store.save_service(&saved))
            .await?;
        tracing::info!(service = %service.id, %status, reason = reason.as_deref().unwrap_or(""), "status");
        self.events()
            .publish(
                &service.id,
                EventKind::Status(status),
                reason.unwrap_or_default(),
            )
            .await;
        Ok(())
    }

    /// This service's container, if one exists and carries this instance's label.
    pub(super) async fn own_container(
        &self,
        service: &Service,
    ) -> Result<Option<ContainerInfo>, RuntimeError> {
        let found = self.runtime().inspect(&service.container_name()).await?;
        Ok(found
            .filter(|c| c.labels.get("aima.instance").map(String::as_str) == Some(self.instance())))
    }

    /// Removes this service's container. A container with the same name that is not ours
    /// is never touched: it comes back as the obstacle, for the caller to name.
    pub(super) async fn remove_own_container(
        &self,
        service: &Service,
    ) -> Result<Option<ContainerInfo>, RuntimeError> {
        let Some(found) = self.runtime().inspect(&service.container_name()).await? else {
            return Ok(None);
        };
        if found.labels.get("aima.instance").map(String::as_str) != Some(self.instance()) {
            return Ok(Some(found));
        }
        self.runtime().remove(&found.id, STOP_GRACE).await?;
        Ok(None)
    }

    /// Removes the container of a service that is turning `failed`; when Docker refuses,
    /// keeps trying in the background, so no container runs under a failed service.
    async fn clean_up_or_retry(&self, service: &Service) {
        if let Err(e) = self.remove_own_container(service).await {
            tracing::warn!(service = %service.id, "cleanup failed, retrying in the background: {e}");
            self.retry_cleanup(service.clone());
        }
    }

    /// Retries removing a failed service's container with back-off until it is gone, the
    /// service is started again (its start cleans up) or the daemon shuts down.
    /// Reconciliation removes it too, when Docker comes back.
    fn retry_cleanup(&self, service: Service) {
        let daemon = self.clone();
        tokio::spawn(async move {
            let mut pause = CLEANUP_FIRST_RETRY;
            loop {
                tokio::select! {
                    () = daemon.inner.shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(CLEANUP_MAX_RETRY);
                let lock = daemon.service_lock(&service.id);
                let _guard = lock.lock().await;
                let current = match daemon.load_service(&service.id).await {
                    Ok(current) if !current.status.can_start() => return,
                    Ok(current) => current,
                    Err(DaemonError::NotFound { .. }) => return,
                    Err(_) => continue,
                };
                match daemon.remove_own_container(&service).await {
                    Ok(_) => {
                        tracing::info!(service = %service.id, "removed the container a failed cleanup left");
                        daemon.drop_retry_promise(current).await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(service = %service.id, retry_in = ?pause, "cleanup still failing: {e}");
                    }
                }
            }
        });
    }

    /// Once the container is gone, a reason that says AIMA keeps trying is no longer true:
    /// it says the container was removed instead (same status).
    pub(super) async fn drop_retry_promise(&self, mut service: Service) {
        let Some(before) = service
            .status_reason
            .as_deref()
            .and_then(|r| r.split_once(RETRY_PROMISE))
            .map(|(before, _)| before.to_owned())
        else {
            return;
        };
        let reason = format!("{before}; the container was removed later, once Docker answered");
        let status = service.status;
        if let Err(e) = self.set_status(&mut service, status, Some(reason)).await {
            tracing::warn!(service = %service.id, "could not update the reason after the cleanup: {e}");
        }
    }

    /// Who holds `port`, or `None` when it is free. Docker's own publishers are named by
    /// container; anything else by process.
    pub(super) async fn port_holder(&self, port: u16) -> Option<PortHolder> {
        if ports::is_free(port) {
            return None;
        }
        if let Ok(containers) = self.runtime().publishers_of(port).await
            && let Some(c) = containers.into_iter().next()
        {
            return Some(PortHolder::Container {
                name: c.name,
                id: c.id,
            });
        }
        let found = tokio::task::spawn_blocking(move || ports::process_listening_on(port))
            .await
            .ok()
            .flatten();
        Some(match found {
            Some((pid, command)) => PortHolder::Process { pid, command },
            None if ports::outgoing_connection_on(port) => PortHolder::OutgoingConnection {
                ephemeral: ports::ephemeral_range(),
            },
            None => PortHolder::Unknown,
        })
    }

    /// Docker frees a published port asynchronously after removal; wait until it is bindable.
    async fn wait_port_released(&self, port: u16) {
        let deadline = Instant::now() + PORT_RELEASE_DEADLINE;
        let mut pause = Duration::from_millis(5);
        while !ports::is_free(port) && Instant::now() < deadline {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Saves the container's last lines so `service logs` explains a failure after cleanup.
    pub(super) async fn keep_last_logs(&self, service: &Service, container_id: &str) -> String {
        let mut text = String::new();
        // Kept with Docker's timestamps, so `logs --since` and `--timestamps` still work.
        let query = crate::runtime::LogQuery {
            tail: Some(KEPT_LOG_LINES),
            timestamps: true,
            ..Default::default()
        };
        if let Ok(mut stream) = self.runtime().logs(container_id, query).await {
            while let Some(Ok(chunk)) = stream.next().await {
                text.push_str(&chunk.text);
            }
        }
        let (id, saved) = (service.id.clone(), text.clone());
        if let Err(e) = self
            .store()
            .run(move |store| store.save_last_logs(&id, &saved))
            .await
        {
            tracing::warn!(service = %service.id, "cannot keep the last log lines: {e}");
        }
        // The diagnosis reads the engine's words, without the times.
        text.lines()
            .map(|line| super::services::split_timestamp(line).1)
            .fold(String::new(), |mut out, line| {
                out.push_str(line);
                out.push('\n');
                out
            })
    }

    pub(super) fn container_spec(
        &self,
        service: &Service,
        engine: &Engine,
        model: &Model,
        gpu_device: Option<&str>,
        on_gpu: bool,
    ) -> ContainerSpec {
        let gpu = service
            .gpu_memory_utilization
            .unwrap_or(engine.spec.default_gpu_memory_utilization);
        // Local weights (and pulled ones) are mounted read-only at a fixed path; the
        // engine sees that path.
        let (model_ref, read_only_mounts) = match (model.source, &model.path) {
            (ModelSource::Local, _) | (_, Some(_)) => {
                let path = model.path.clone().unwrap_or_default();
                // An engine that takes one file gets the model's file inside the mount.
                let inside = engine
                    .spec
                    .model_file
                    .and_then(|ext| model_file_in(std::path::Path::new(&path), ext))
                    .map_or_else(
                        || LOCAL_MODEL_PATH.to_owned(),
                        |file| format!("{LOCAL_MODEL_PATH}/{file}"),
                    );
                (inside, vec![(path, LOCAL_MODEL_PATH.to_owned())])
            }
            _ => (model.repo.clone().unwrap_or_default(), Vec::new()),
        };
        // The engine holds the context its memory was planned for (the model's own, or
        // what the operator stated).
        let context = model.facts.context_length.as_ref().map(|k| k.value);
        let mut env = engine.env(&model_ref, &model.name, gpu, context);
        env.extend(service.env.iter().map(ToString::to_string));
        let labels = BTreeMap::from([
            ("aima.managed".to_owned(), "true".to_owned()),
            ("aima.engine".to_owned(), service.engine.clone()),
            ("aima.service".to_owned(), service.id.to_string()),
            ("aima.instance".to_owned(), self.instance().to_owned()),
        ]);
        ContainerSpec {
            name: service.container_name(),
            image: engine.image_for(on_gpu).to_owned(),
            args: engine.args(&model_ref, &model.name, gpu, on_gpu, context),
            env,
            labels,
            container_port: engine.spec.container_port,
            host_port: service.port,
            host_ip: self.settings().publish_addr,
            gpu_device: gpu_device.map(str::to_owned),
            read_only_mounts,
            shm_size_bytes: engine.spec.shm_size_bytes,
        }
    }
}

/// The file an engine that takes one file runs in the model directory `dir`: the only
/// file with extension `ext`, or the first part of a split model (`-00001-of-000NN`);
/// `None` when `dir` is a file itself (mounted as it is) or holds no such file.
fn model_file_in(dir: &std::path::Path, ext: &str) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| {
            std::path::Path::new(name)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case(ext))
        })
        .collect();
    names.sort();
    names
        .iter()
        .find(|name| name.contains("-00001-of-"))
        .or(names.first())
        .cloned()
}

/// The one reason, or every attempt's reason in order./// The one reason, or every attempt's reason in order.
fn every_attempt(mut attempts: Vec<String>) -> String {
    if attempts.len() == 1 {
        return attempts.remove(0);
    }
    let listed: Vec<String> = attempts
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}) {a}", i + 1))
        .collect();
    format!(
        "start failed after {} attempts: {}",
        attempts.len(),
        listed.join("; ")
    )
}

/// Names a container that holds this service's container name without being ours.
fn squatter_note(obstacle: &ContainerInfo) -> String {
    format!(
        "container name {} is taken by container {} that this AIMA home did not create; it was left alone",
        obstacle.name,
        short(&obstacle.id)
    )
}

fn short(container_id: &str) -> &str {
    container_id.get(..12).unwrap_or(container_id)
}

fn port_conflict(port: u16, holder: &PortHolder) -> Failure {
    Failure::new(
        FailureCause::PortHeld,
        format!(
            "port {port} is already in use by {holder}; stop it, or delete this service and create it with another --port"
        ),
    )
}

/// "container exited with code 1 during start: <diagnosis>; last log: <line>", caused by
/// `cause`, or by running out of memory when the log says so.
fn exit_failure(
    cause: FailureCause,
    when: &str,
    code: i64,
    engine: &Engine,
    logs: &str,
) -> Failure {
    let diagnosis = engine.diagnose(logs);
    let cause = if diagnosis == Some(crate::engines::OUT_OF_MEMORY) {
        FailureCause::OutOfMemory
    } else {
        cause
    };
    Failure::new(cause, exit_reason(when, code, diagnosis, logs))
}

fn exit_reason(when: &str, code: i64, diagnosis: Option<&str>, logs: &str) -> String {
    let mut reason = format!("container exited with code {code} {when}");
    if code > 128 && code < 160 {
        // 128+N: the engine was killed by signal N (137: SIGKILL, often the kernel's OOM killer or `docker kill`).
        reason.push_str(&format!(" (killed by signal {})", code - 128));
    }
    if let Some(diagnosis) = diagnosis {
        reason.push_str(&format!(": {diagnosis}"));
    }
    // The error the log names, when its last line only points back at it.
    if let Some(error) = crate::domain::error_line(logs) {
        reason.push_str(&format!("; the engine's error: {error}"));
    } else if let Some(last) = logs.lines().rev().find(|l| !l.trim().is_empty()) {
        reason.push_str(&format!("; last log line: {}", last.trim()));
    }
    reason.push_str("; see 'aima service logs'");
    reason
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use futures::stream::BoxStream;

    use crate::config::{Flags, Settings};
    use crate::daemon::{Daemon, ModelRequest, ServiceRequest};
    use crate::runtime::{
        ContainerEvent, ContainerInfo, ContainerRuntime, ContainerSpec, LogChunk, RuntimeError,
        RuntimeVersion,
    };

    /// A runtime whose `create_container` fails with the queued errors, in order, and
    /// whose `remove` fails `failing_removes` times. Once `instance` is set, a container
    /// of that instance is there to remove until a removal succeeds.
    #[derive(Default)]
    struct FailingCreates {
        errors: Mutex<Vec<RuntimeError>>,
        creates: Mutex<usize>,
        instance: Mutex<Option<String>>,
        failing_removes: Mutex<usize>,
        removes: Mutex<usize>,
    }

    #[async_trait]
    impl ContainerRuntime for FailingCreates {
        fn address(&self) -> &str {
            "fake://"
        }
        async fn ping(&self) -> Result<RuntimeVersion, RuntimeError> {
            Err(RuntimeError::Failed("fake".into()))
        }
        async fn image_present(&self, _: &str) -> Result<bool, RuntimeError> {
            Ok(true)
        }
        async fn image_labels(
            &self,
            _: &str,
        ) -> Result<Option<BTreeMap<String, String>>, RuntimeError> {
            Ok(Some(BTreeMap::from([(
                "ai.aima.gpu".to_owned(),
                "optional".to_owned(),
            )])))
        }
        async fn pull_image(
            &self,
            _: &str,
            _: &(dyn Fn(String) + Send + Sync),
        ) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn create_container(&self, _: &ContainerSpec) -> Result<String, RuntimeError> {
            *self.creates.lock().expect("lock") += 1;
            let mut errors = self.errors.lock().expect("lock");
            if errors.is_empty() {
                Ok("c0ffee".into())
            } else {
                Err(errors.remove(0))
            }
        }
        async fn start_container(&self, _: &str) -> Result<(), RuntimeError> {
            Err(RuntimeError::Failed("start refused".into()))
        }
        async fn wait_exit(&self, _: &str) -> Result<i64, RuntimeError> {
            futures::future::pending().await
        }
        async fn inspect(&self, name: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
            let instance = self.instance.lock().expect("lock").clone();
            Ok(instance.map(|instance| ContainerInfo {
                id: "c0ffee".into(),
                name: name.to_owned(),
                image: "stub".into(),
                args: Vec::new(),
                labels: BTreeMap::from([("aima.instance".to_owned(), instance)]),
                running: true,
                exit_code: None,
                oom_killed: false,
                host_ports: Vec::new(),
            }))
        }
        async fn list(
            &self,
            _: &BTreeMap<String, String>,
        ) -> Result<Vec<ContainerInfo>, RuntimeError> {
            Ok(Vec::new())
        }
        async fn publishers_of(&self, _: u16) -> Result<Vec<ContainerInfo>, RuntimeError> {
            Ok(Vec::new())
        }
        async fn stop(&self, _: &str, _: Duration) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn remove(&self, _: &str, _: Duration) -> Result<(), RuntimeError> {
            *self.removes.lock().expect("lock") += 1;
            let mut failing = self.failing_removes.lock().expect("lock");
            if *failing > 0 {
                *failing -= 1;
                return Err(RuntimeError::Transient("device or resource busy".into()));
            }
            // Removed: nothing left to inspect.
            self.instance.lock().expect("lock").take();
            Ok(())
        }
        async fn logs(
            &self,
            _: &str,
            _: crate::runtime::LogQuery,
        ) -> Result<BoxStream<'static, Result<LogChunk, RuntimeError>>, RuntimeError> {
            Ok(Box::pin(futures::stream::empty()))
        }
        async fn events(
            &self,
            _: &BTreeMap<String, String>,
            _: Option<i64>,
        ) -> Result<BoxStream<'static, Result<ContainerEvent, RuntimeError>>, RuntimeError>
        {
            Ok(Box::pin(futures::stream::pending()))
        }
    }

    /// Host ports the fake runtime's services take.
    const TEST_PORT_RANGE: &str = "23000-23099";

    async fn failed_reason(errors: Vec<RuntimeError>) -> (String, usize) {
        let runtime = Arc::new(FailingCreates {
            errors: Mutex::new(errors),
            ..FailingCreates::default()
        });
        let (reason, _daemon) = fail_a_start(Arc::clone(&runtime), |_| {}).await;
        let creates = *runtime.creates.lock().expect("lock");
        (reason, creates)
    }

    /// Starts a service on `runtime` and waits for it to fail; `prepare` sees the daemon
    /// before the start.
    async fn fail_a_start(
        runtime: Arc<FailingCreates>,
        prepare: impl FnOnce(&Daemon),
    ) -> (String, (tempfile::TempDir, Daemon)) {
        let (dir, store) = crate::store::temp_store();
        let settings = Settings::resolve_with(
            &Flags {
                home: Some(dir.path().to_owned()),
                addr: None,
            },
            // Off the default range (8000-8999), where a real service on this host may
            // listen: the start's port check probes the host.
            |key| (key == "AIMA_PORT_RANGE").then(|| TEST_PORT_RANGE.to_owned()),
            Vec::new(),
        )
        .expect("settings");
        let daemon = Daemon::new(settings, store, runtime.clone()).expect("daemon");
        prepare(&daemon);
        let model = daemon
            .create_model(ModelRequest {
                name: "m".into(),
                source: "ollama".into(),
                repo: Some("r".into()),
                ..ModelRequest::default()
            })
            .await
            .expect("model");
        let service = daemon
            .create_service(ServiceRequest {
                model_id: model.id.to_string(),
                engine: "vllm".into(),
                ..ServiceRequest::default()
            })
            .await
            .expect("service");
        assert!(
            (23_000..=23_099).contains(&service.port),
            "the fake runtime's service got port {} outside {TEST_PORT_RANGE}",
            service.port
        );
        daemon
            .start_service(service.id.as_str())
            .await
            .expect("start");
        for _ in 0..200 {
            let s = daemon.get_service(service.id.as_str()).await.expect("get");
            if s.status == crate::domain::ServiceStatus::Failed {
                return (s.status_reason.unwrap_or_default(), (dir, daemon));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the start never failed");
    }

    #[tokio::test]
    async fn transient_causes_are_retried_and_every_attempt_is_reported() {
        let transient =
            || RuntimeError::Transient("Conflict. The container name is already in use".into());
        let (reason, creates) = failed_reason(vec![transient(), transient(), transient()]).await;
        assert_eq!(creates, 3, "three attempts");
        assert!(
            reason.starts_with("start failed after 3 attempts: 1) "),
            "{reason}"
        );
        assert!(
            reason.contains("2) docker: Conflict") && reason.contains("3) docker: Conflict"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_cleanup_docker_refuses_is_retried_until_the_container_is_gone() {
        let runtime = Arc::new(FailingCreates {
            failing_removes: Mutex::new(5),
            ..FailingCreates::default()
        });
        let (_reason, _daemon) = fail_a_start(Arc::clone(&runtime), |daemon| {
            *runtime.instance.lock().expect("lock") = Some(daemon.instance().to_owned());
        })
        .await;
        // Three launch attempts and the failed start's cleanup are refused; the
        // background retries (after 0.5 s, then 1 s) go on until a removal succeeds.
        for _ in 0..100 {
            if runtime.instance.lock().expect("lock").is_none() {
                assert_eq!(*runtime.removes.lock().expect("lock"), 6);
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the container is still there after {} removals",
            runtime.removes.lock().expect("lock")
        );
    }

    #[tokio::test]
    async fn a_stop_whose_cleanup_succeeds_later_stops_promising_more_tries() {
        let runtime = Arc::new(FailingCreates::default());
        let (_, (_dir, daemon)) = fail_a_start(Arc::clone(&runtime), |_| {}).await;
        let id = daemon.list_services().await.expect("list")[0].id.clone();
        // Now a container of ours is there and Docker refuses to remove it twice.
        *runtime.instance.lock().expect("lock") = Some(daemon.instance().to_owned());
        *runtime.failing_removes.lock().expect("lock") = 2;
        let refused = daemon
            .stop_service(id.as_str())
            .await
            .expect_err("the stop cannot remove the container");
        assert!(
            refused.to_string().contains(super::RETRY_PROMISE),
            "{refused}"
        );
        for _ in 0..100 {
            let s = daemon.get_service(id.as_str()).await.expect("get");
            if runtime.instance.lock().expect("lock").is_none()
                && !s
                    .status_reason
                    .as_deref()
                    .unwrap_or_default()
                    .contains("keeps trying")
            {
                assert_eq!(s.status, crate::domain::ServiceStatus::Failed);
                assert_eq!(
                    s.status_reason.as_deref(),
                    Some(
                        "stop could not remove the container: docker: device or resource busy; \
                         the container was removed later, once Docker answered"
                    )
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the reason still promises more tries: {:?}",
            daemon
                .get_service(id.as_str())
                .await
                .expect("get")
                .status_reason
        );
    }

    #[tokio::test]
    async fn reconciliation_after_a_restart_drops_the_promise_of_a_dead_cleanup() {
        let runtime = Arc::new(FailingCreates::default());
        let (_, (_dir, daemon)) = fail_a_start(Arc::clone(&runtime), |_| {}).await;
        let mut service = daemon.list_services().await.expect("list").remove(0);
        // What a daemon killed while its cleanup retried left in the database.
        service.status_reason = Some(format!(
            "stop could not remove the container: docker: busy{}",
            super::RETRY_PROMISE
        ));
        let saved = service.clone();
        daemon
            .store()
            .run(move |store| store.save_service(&saved))
            .await
            .expect("save");
        daemon.reconcile().await.expect("reconcile");
        let after = daemon.get_service(service.id.as_str()).await.expect("get");
        assert_eq!(
            after.status_reason.as_deref(),
            Some(
                "stop could not remove the container: docker: busy; \
                 the container was removed later, once Docker answered"
            )
        );
    }

    #[tokio::test]
    async fn permanent_causes_fail_at_once() {
        let (reason, creates) =
            failed_reason(vec![RuntimeError::Failed("no such image".into())]).await;
        assert_eq!(creates, 1, "no retry for a permanent cause");
        assert_eq!(reason, "docker: no such image");
    }
}
