//! Whether the database takes writes, for `/api/v1/health`: one real write at most every
//! few seconds, its answer shared by the callers in between.

use std::time::{Duration, Instant};

use super::Daemon;

/// How long one write check's answer stands.
const CHECK_EVERY: Duration = Duration::from_secs(3);
/// A write check that takes longer than this counts as refused.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The last write check: when, and the reason when the write failed.
#[derive(Default)]
pub(super) struct WriteCheck(tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>);

impl Daemon {
    /// `Ok` when the database took a write within the last few seconds; the reason
    /// (read-only file, full disk) when it did not.
    pub async fn database_writable(&self) -> Result<(), String> {
        let mut last = self.inner.write_check.0.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < CHECK_EVERY
        {
            return answer.clone();
        }
        let write = self.store().run(|store| store.check_writable());
        let answer = match tokio::time::timeout(CHECK_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "database {} did not take a write within {}s; check the disk it is on",
                self.store().path().display(),
                CHECK_TIMEOUT.as_secs()
            )),
        };
        // Logged when it changes, not at every probe.
        let before = last.as_ref().map(|(_, before)| before.is_ok());
        match &answer {
            Err(reason) if before != Some(false) => tracing::warn!("degraded: {reason}"),
            Ok(()) if before == Some(false) => tracing::info!("the database takes writes again"),
            _ => {}
        }
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}
