//! Reconciliation: make every service's record agree with Docker, at start and whenever
//! the Docker event stream reconnects. Adopts matching running containers, fails services
//! whose container died while nobody watched, finishes interrupted stops, and removes this
//! instance's containers that no service owns.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Daemon, DaemonError};
use crate::domain::{EventKind, Failure, FailureCause, Service, ServiceStatus};
use crate::runtime::ContainerInfo;

/// How long reconciliation waits for a container an interrupted start may still create.
const LATE_CREATE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// What a reconciliation did, for the log and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub adopted: usize,
    pub resumed: usize,
    pub failed: usize,
    pub stopped: usize,
    pub recreated: usize,
    pub removed_leftovers: usize,
    /// Services in back-off whose restart was scheduled again.
    pub restarts_resumed: usize,
}

impl Daemon {
    /// Brings every service in line with Docker. Fails only when Docker cannot be asked.
    pub async fn reconcile(&self) -> Result<Reconciled, DaemonError> {
        let started = Instant::now();
        let containers = self.runtime().list(&self.instance_labels()).await?;
        let mut by_service: BTreeMap<String, Vec<ContainerInfo>> = BTreeMap::new();
        for container in containers {
            let owner = container
                .labels
                .get("aima.service")
                .cloned()
                .unwrap_or_default();
            by_service.entry(owner).or_default().push(container);
        }
        let services = self.list_services().await?;
        let mut done = Reconciled::default();
        for service in services {
            let own = by_service.remove(service.id.as_str()).unwrap_or_default();
            let id = service.id.clone();
            // One service Docker refuses to talk about must not leave the others unreconciled.
            if let Err(e) = self.reconcile_service(service, own, &mut done).await {
                tracing::warn!(service = %id, "cannot reconcile: {e}");
            }
        }
        // Containers of this instance that no service owns (a crash between create and
        // record, or a deleted service) are leftovers.
        for container in by_service.into_values().flatten() {
            tracing::info!(container = %container.name, "removing a leftover container of this instance");
            match self
                .runtime()
                .remove(&container.id, std::time::Duration::ZERO)
                .await
            {
                Ok(()) => done.removed_leftovers += 1,
                Err(e) => {
                    tracing::warn!(container = %container.name, "cannot remove the leftover: {e}")
                }
            }
        }
        tracing::info!(elapsed = ?started.elapsed(), ?done, "reconciled services with docker");
        Ok(done)
    }

    async fn reconcile_service(
        &self,
        mut service: Service,
        own: Vec<ContainerInfo>,
        done: &mut Reconciled,
    ) -> Result<(), DaemonError> {
        // A start running in this daemon owns its service; nothing to reconcile.
        if self.start_in_flight(&service.id) {
            return Ok(());
        }
        let lock = self.service_lock(&service.id);
        let guard = lock.lock().await;
        // The snapshot was taken before the lock: if a start, stop or the watcher changed
        // the service meanwhile, that operation's view is newer than ours.
        let current = self.load_service(&service.id).await?;
        if self.start_in_flight(&service.id)
            || current.status != service.status
            || current.container_id != service.container_id
        {
            return Ok(());
        }
        let expected = self.expected_spec(&service).await;
        let (matching, others): (Vec<_>, Vec<_>) = own.into_iter().partition(|c| {
            c.running
                && c.host_ports.contains(&service.port)
                && expected.as_ref().is_some_and(|specs| {
                    specs
                        .iter()
                        .any(|(image, args)| &c.image == image && &c.args == args)
                })
        });
        match service.status {
            ServiceStatus::Running | ServiceStatus::Starting => {
                if let Some(dead) = others.iter().find(|c| !c.running) {
                    // Read why it stopped before the container goes.
                    self.keep_last_logs(&service, &dead.id).await;
                }
                for stale in &others {
                    self.runtime()
                        .remove(&stale.id, std::time::Duration::ZERO)
                        .await?;
                }
                if let Some(container) = matching.into_iter().next() {
                    service.container_id = Some(container.id.clone());
                    if service.status == ServiceStatus::Running {
                        self.save(&service).await?;
                        self.events()
                            .publish(
                                &service.id,
                                EventKind::Note,
                                format!("adopted running container {}", short(&container.id)),
                            )
                            .await;
                        done.adopted += 1;
                    } else if let Some(engine) = self.inner.engines.get(&service.engine) {
                        self.save(&service).await?;
                        drop(guard);
                        self.resume_start(service, engine, container.id).await;
                        done.resumed += 1;
                    }
                    return Ok(());
                }
                if let Some(dead) = others.iter().find(|c| !c.running) {
                    // The container stopped while no daemon watched.
                    service.container_id = None;
                    let code = dead
                        .exit_code
                        .map_or_else(|| "unknown".to_owned(), |c| c.to_string());
                    if service.status == ServiceStatus::Starting {
                        // Created but never started, or died loading the model: either
                        // way no daemon saw the start through.
                        self.interrupted_start(
                            &mut service,
                            &format!("container exit code {code}"),
                        )
                        .await?;
                    } else {
                        let failure = Failure::new(
                            FailureCause::Crashed,
                            format!(
                                "container exited while the daemon was down (exit code {code}); see 'aima service logs'"
                            ),
                        );
                        self.fail_or_back_off(&mut service, failure, dead.exit_code)
                            .await?;
                    }
                    done.failed += 1;
                    return Ok(());
                }
                if !others.is_empty() {
                    // Running, but not as the service says (image, args or port changed,
                    // e.g. a new engine image setting): start it again with today's spec.
                    service.container_id = None;
                    self.set_status(
                        &mut service,
                        ServiceStatus::Stopped,
                        Some("spec changed; restarting".to_owned()),
                    )
                    .await?;
                    drop(guard);
                    self.start_service(service.id.as_str()).await?;
                    done.recreated += 1;
                    return Ok(());
                }
                if service.status == ServiceStatus::Starting {
                    // A create the previous daemon sent just before it died may land
                    // now; wait for it briefly, so ready means its leftover is gone too.
                    self.remove_late_create(&service).await;
                }
                service.container_id = None;
                if service.status == ServiceStatus::Starting {
                    self.interrupted_start(&mut service, "no container yet")
                        .await?;
                } else {
                    let failure = Failure::new(
                        FailureCause::Vanished,
                        "container vanished while the daemon was down; start it again",
                    );
                    self.fail_or_back_off(&mut service, failure, None).await?;
                }
                done.failed += 1;
            }
            ServiceStatus::Stopping => {
                // A stop was interrupted: finish it.
                for container in matching.iter().chain(&others) {
                    self.runtime()
                        .remove(&container.id, std::time::Duration::ZERO)
                        .await?;
                }
                service.container_id = None;
                self.set_status(&mut service, ServiceStatus::Stopped, None)
                    .await?;
                done.stopped += 1;
            }
            ServiceStatus::Creating
            | ServiceStatus::Stopped
            | ServiceStatus::Failed
            | ServiceStatus::Backoff => {
                for container in matching.iter().chain(&others) {
                    self.runtime()
                        .remove(&container.id, std::time::Duration::ZERO)
                        .await?;
                    done.removed_leftovers += 1;
                }
                if service.container_id.take().is_some() {
                    self.save(&service).await?;
                }
                // A stop's cleanup the previous daemon kept retrying is done now.
                self.drop_retry_promise(service.clone()).await;
                if service.status == ServiceStatus::Backoff {
                    // A restart the previous daemon had scheduled: the rest of its wait.
                    let due = service.restarts.next_at.unwrap_or_else(chrono::Utc::now);
                    self.schedule_restart(service.id.clone(), due);
                    done.restarts_resumed += 1;
                }
            }
        }
        Ok(())
    }

    /// A start the previous daemon did not see through. The operator's (or a request's)
    /// start fails with the reason, for them to start again; an automatic restart goes
    /// back to its policy, which counts it as an attempt and schedules the next, so a
    /// kill can never end a `--restart always` service's self-healing.
    async fn interrupted_start(
        &self,
        service: &mut Service,
        found: &str,
    ) -> Result<(), DaemonError> {
        if service.restarts.began_by_policy() {
            let failure = Failure::new(
                FailureCause::Interrupted,
                format!(
                    "the daemon stopped during automatic restart {} ({found})",
                    service.restarts.in_a_row
                ),
            );
            // The engine did not exit by itself: no exit code for the policy to judge.
            self.fail_or_back_off(service, failure, None).await
        } else {
            let failure = Failure::new(
                FailureCause::Interrupted,
                format!("the daemon stopped during the start ({found}); start it again"),
            );
            self.fail(service, failure).await
        }
    }

    /// Removes the container of an interrupted start if Docker creates it within
    /// [`LATE_CREATE_WAIT`] (the killed daemon's request still in Docker's hands).
    async fn remove_late_create(&self, service: &Service) {
        let deadline = Instant::now() + LATE_CREATE_WAIT;
        while Instant::now() < deadline {
            match self.own_container(service).await {
                Ok(Some(late)) => {
                    tracing::info!(service = %service.id, container = short(&late.id), "removing the container of an interrupted start");
                    if let Err(e) = self
                        .runtime()
                        .remove(&late.id, std::time::Duration::ZERO)
                        .await
                    {
                        tracing::warn!(service = %service.id, "cannot remove it: {e}");
                    }
                    return;
                }
                Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                Err(_) => return,
            }
        }
    }

    /// The images and arguments the service's container may have (on the CPU, and on a
    /// GPU for an engine that runs on either), if its engine and model still exist.
    async fn expected_spec(&self, service: &Service) -> Option<Vec<(String, Vec<String>)>> {
        let engine = self.inner.engines.get(&service.engine)?;
        let model = self.get_model(service.model_id.as_str()).await.ok()?;
        // A start that chose the share by the model's size gave the engine that share.
        let id = service.id.clone();
        let placed = self
            .store()
            .run(move |store| store.placed_share(&id))
            .await
            .ok()
            .flatten();
        let service = &Service {
            gpu_memory_utilization: service.gpu_memory_utilization.or(placed),
            ..service.clone()
        };
        Some(
            [false, true]
                .into_iter()
                .map(|on_gpu| {
                    let spec = self.container_spec(service, &engine, &model, None, on_gpu);
                    (spec.image, spec.args)
                })
                .collect(),
        )
    }

    async fn save(&self, service: &Service) -> Result<(), DaemonError> {
        let saved = service.clone();
        Ok(self
            .store()
            .run(move |store| store.save_service(&saved))
            .await?)
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
