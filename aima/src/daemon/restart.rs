//! Self-healing: a service whose engine stops on its own is started again through the
//! ordinary start pipeline (never by a Docker restart policy), after a back-off that
//! grows with each failure in a row, until its restart policy gives up. The pending
//! restart is persisted (status `backoff`, its due time), so a daemon that stops or is
//! killed resumes it after reconciliation.

use chrono::{SubsecRound, Utc};

use super::lifecycle::StartOrigin;
use super::{Daemon, DaemonError};
use crate::domain::{Failure, Service, ServiceId, ServiceStatus, Verdict, verdict};

impl Daemon {
    /// Records the failure of a service that was running (or restarting): `backoff` with
    /// the next attempt scheduled when its policy allows another, `failed` otherwise.
    pub(super) async fn fail_or_back_off(
        &self,
        service: &mut Service,
        failure: Failure,
        exit_code: Option<i64>,
    ) -> Result<(), DaemonError> {
        let now = Utc::now();
        if exit_code.is_some() {
            service.restarts.last_exit_code = exit_code;
        }
        let judged = verdict(
            service.restart,
            self.settings().restart_backoff,
            &service.restarts,
            failure.cause,
            exit_code == Some(0),
            &failure.reason,
            now,
        );
        match judged {
            Verdict::Fail(reason) => {
                self.fail(service, Failure::new(failure.cause, reason))
                    .await
            }
            Verdict::Restart { attempt, delay } => {
                self.metrics().failed(&service.engine, failure.cause);
                // Milliseconds, as stored: the restart matches the stored due time.
                let due = (now
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX))
                .trunc_subsecs(3);
                service.restarts.in_a_row = attempt;
                service.restarts.next_at = Some(due);
                service.restarts.running_since = None;
                let of = match service.restart {
                    crate::domain::RestartPolicy::OnFailure { max } => format!(" of {max}"),
                    _ => String::new(),
                };
                let reason = format!(
                    "restart {attempt}{of} in {} (at {}): {}",
                    humantime::format_duration(delay),
                    due.format("%H:%M:%S"),
                    failure.reason
                );
                self.set_status(service, ServiceStatus::Backoff, Some(reason))
                    .await?;
                self.schedule_restart(service.id.clone(), due);
                Ok(())
            }
        }
    }

    /// Starts `id` again once `due` comes, if it still waits for that restart then.
    pub(super) fn schedule_restart(&self, id: ServiceId, due: chrono::DateTime<Utc>) {
        let daemon = self.clone();
        let shutdown = self.shutdown_token();
        tokio::spawn(async move {
            let wait = (due - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                // The next daemon resumes it from the stored due time.
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            if let Err(e) = daemon
                .start_with(id.clone(), StartOrigin::Restart, Some(due))
                .await
            {
                tracing::warn!(service = %id, "the restart could not begin: {e}");
            }
        });
    }
}
