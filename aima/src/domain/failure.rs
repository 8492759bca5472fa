//! Why a service turned `failed`: the reason for people, and a cause from a short fixed
//! list for programs (metrics labels, and whether trying again can help).

use std::fmt;

/// What went wrong, in a few words a metric label or a script can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureCause {
    /// The GPU memory claim does not fit, or the host has no GPU for a GPU engine.
    GpuAdmission,
    /// The service's host port is held by a process or container that is not AIMA's.
    PortHeld,
    /// A container that is not this instance's already has the service's name.
    NameTaken,
    /// The engine image is not on this host and cannot be pulled.
    ImageMissing,
    /// The model, or its local path, is gone.
    ModelMissing,
    /// Docker refused or failed a call, after the retries transient causes get.
    Docker,
    /// The engine exited before it answered its health path.
    ExitedDuringStart,
    /// The engine ran out of GPU memory (its log says so).
    OutOfMemory,
    /// The engine did not answer its health path within the start's deadline.
    StartTimeout,
    /// The engine exited while it was running.
    Crashed,
    /// The engine stopped answering its health path while its container ran.
    Unhealthy,
    /// The container was removed behind AIMA's back, or vanished while the daemon was down.
    Vanished,
    /// The daemon stopped in the middle of the start.
    Interrupted,
    /// A stop could not remove the container (AIMA keeps trying).
    CleanupFailed,
}

impl FailureCause {
    pub const ALL: [FailureCause; 14] = [
        Self::GpuAdmission,
        Self::PortHeld,
        Self::NameTaken,
        Self::ImageMissing,
        Self::ModelMissing,
        Self::Docker,
        Self::ExitedDuringStart,
        Self::OutOfMemory,
        Self::StartTimeout,
        Self::Crashed,
        Self::Unhealthy,
        Self::Vanished,
        Self::Interrupted,
        Self::CleanupFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GpuAdmission => "gpu_admission",
            Self::PortHeld => "port_held",
            Self::NameTaken => "name_taken",
            Self::ImageMissing => "image_missing",
            Self::ModelMissing => "model_missing",
            Self::Docker => "docker",
            Self::ExitedDuringStart => "exited_during_start",
            Self::OutOfMemory => "out_of_memory",
            Self::StartTimeout => "start_timeout",
            Self::Crashed => "crashed",
            Self::Unhealthy => "unhealthy",
            Self::Vanished => "vanished",
            Self::Interrupted => "interrupted",
            Self::CleanupFailed => "cleanup_failed",
        }
    }

    /// False when the same start would fail the same way until the operator changes
    /// something on the host (frees the port, loads the image, frees GPU memory).
    pub fn can_recover_by_itself(self) -> bool {
        !matches!(
            self,
            Self::GpuAdmission
                | Self::PortHeld
                | Self::NameTaken
                | Self::ImageMissing
                | Self::ModelMissing
                | Self::CleanupFailed
        )
    }
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure: its cause, and the one-line reason the operator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: FailureCause,
    pub reason: String,
}

impl Failure {
    pub fn new(cause: FailureCause, reason: impl Into<String>) -> Self {
        Self {
            cause,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_have_distinct_snake_case_labels() {
        let labels: std::collections::BTreeSet<_> =
            FailureCause::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels.len(), FailureCause::ALL.len());
        assert!(
            labels
                .iter()
                .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
    }

    #[test]
    fn only_host_obstacles_need_the_operator() {
        let operator: Vec<_> = FailureCause::ALL
            .into_iter()
            .filter(|c| !c.can_recover_by_itself())
            .collect();
        assert_eq!(
            operator,
            [
                FailureCause::GpuAdmission,
                FailureCause::PortHeld,
                FailureCause::NameTaken,
                FailureCause::ImageMissing,
                FailureCause::ModelMissing,
                FailureCause::CleanupFailed
            ]
        );
    }
}
