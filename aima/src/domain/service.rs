use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};

use super::id::{is_hex8, random_hex8};
use super::{Invalid, ModelId};

/// `svc-{engine}-{8 hex}`. Engine names are `[a-z0-9]+`, so the id parses back unambiguously.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(String);

impl ServiceId {
    pub fn random(engine: &str) -> Self {
        Self(format!("svc-{engine}-{}", random_hex8()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The engine named inside the id.
    pub fn engine(&self) -> &str {
        self.0.split('-').nth(1).unwrap_or_default()
    }
}

/// True for engine names that fit inside a service id.
pub fn is_engine_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl FromStr for ServiceId {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('-');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("svc"), Some(engine), Some(hex), None)
                if is_engine_name(engine) && is_hex8(hex) =>
            {
                Ok(Self(s.to_owned()))
            }
            _ => Err(Invalid::new(
                "id",
                format!("'{s}' is not a service id; service ids look like svc-vllm-1a2b3c4d"),
            )),
        }
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a service is in its life. Every transition out of `Starting` and `Stopping` is
/// driven by a task with a deadline, so no status can be stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceStatus {
    /// Created, never started.
    Creating,
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
    /// Failed while running; waiting out its back-off before AIMA starts it again.
    Backoff,
}

impl ServiceStatus {
    pub const ALL: [ServiceStatus; 7] = [
        Self::Creating,
        Self::Starting,
        Self::Running,
        Self::Stopping,
        Self::Stopped,
        Self::Failed,
        Self::Backoff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Backoff => "backoff",
        }
    }

    /// A start may begin from here (a running or starting service is already on its way).
    pub fn can_start(self) -> bool {
        matches!(
            self,
            Self::Creating | Self::Stopped | Self::Failed | Self::Backoff
        )
    }

    /// The status has an owner task working on it.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Starting | Self::Stopping)
    }
}

impl FromStr for ServiceStatus {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| Invalid::new("status", format!("unknown service status '{s}'")))
    }
}

impl fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `KEY=VALUE` passed to the engine container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub key: String,
    pub value: String,
}

impl FromStr for EnvVar {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((key, value)) = s.split_once('=') else {
            return Err(Invalid::new(
                "env",
                format!("env '{s}' has no '='; pass --env KEY=VALUE"),
            ));
        };
        let valid_key = key
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
        if key.is_empty() || !valid_key {
            return Err(Invalid::new(
                "env",
                format!(
                    "env key '{key}' is not a variable name; use letters, digits and _ (not first)"
                ),
            ));
        }
        if value.contains(['\n', '\0']) {
            return Err(Invalid::new(
                "env",
                format!("env value of {key} contains a newline or NUL"),
            ));
        }
        Ok(Self {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// Variables that choose which GPUs a container sees. AIMA places engines on GPUs itself
/// (its claims and Docker's device requests), so a caller's choice would contradict them.
pub const GPU_SELECTING_ENV: [&str; 6] = [
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
];

impl EnvVar {
    /// A `KEY=VALUE` a caller asks for (`--env`, an API body): a valid variable that does
    /// not choose GPUs. Stored rows are read with `parse`, which keeps older ones readable.
    pub fn requested(text: &str) -> Result<Self, Invalid> {
        let var: Self = text.parse()?;
        if GPU_SELECTING_ENV.contains(&var.key.as_str()) {
            return Err(Invalid::new(
                "env",
                format!(
                    "env {} selects GPUs, and AIMA places GPUs itself; leave it out and use --gpu-memory-utilization to size the engine's share ('aima service recommend' shows what fits where)",
                    var.key
                ),
            ));
        }
        Ok(var)
    }
}

impl fmt::Display for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// Checks a GPU memory fraction: engines take (0, 1].
pub fn validate_gpu_memory_utilization(value: f64) -> Result<f64, Invalid> {
    if value.is_finite() && value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(Invalid::new(
            "gpu_memory_utilization",
            format!(
                "gpu memory utilization {value} is out of range; pass a fraction in (0, 1], such as 0.45"
            ),
        ))
    }
}

/// Checks a service name: like a model name, 1-128 printable characters.
pub fn validate_service_name(name: &str) -> Result<String, Invalid> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > super::NAME_MAX_CHARS
        || name.chars().any(super::is_unsafe_char)
    {
        return Err(Invalid::new(
            "name",
            format!(
                "service name must be 1-{} printable characters (no control or text-direction characters)",
                super::NAME_MAX_CHARS
            ),
        ));
    }
    if super::looks_like_an_id(name) {
        return Err(Invalid::new(
            "name",
            format!(
                "service name '{name}' has the form of an id, so it could name the wrong thing; pick another name"
            ),
        ));
    }
    Ok(name.to_owned())
}

/// The lowest port of `range` that no service holds and that `is_free` accepts
/// (the caller probes the host). `None` when the range is exhausted.
pub fn lowest_free_port(
    range: (u16, u16),
    held: &BTreeSet<u16>,
    mut is_free: impl FnMut(u16) -> bool,
) -> Option<u16> {
    (range.0..=range.1).find(|port| !held.contains(port) && is_free(*port))
}

/// The service that a name of `model` means (to the gateway and the CLI): its running
/// one, else the one marked default (the newest so marked), else its oldest.
pub fn service_of_model<'a>(services: &'a [Service], model: &ModelId) -> Option<&'a Service> {
    let of_model = || services.iter().filter(|s| &s.model_id == model);
    of_model()
        .find(|s| s.status == ServiceStatus::Running)
        .or_else(|| of_model().rfind(|s| s.serving.default))
        .or_else(|| of_model().next())
}

/// A service: one engine serving one model on one host port.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub id: ServiceId,
    pub name: String,
    pub model_id: ModelId,
    pub engine: String,
    pub port: u16,
    pub status: ServiceStatus,
    pub status_reason: Option<String>,
    pub container_id: Option<String>,
    pub gpu_memory_utilization: Option<f64>,
    /// The GPU it must run on (`--gpu N`); `None`: wherever its model fits best.
    pub gpu_index: Option<u32>,
    pub env: Vec<EnvVar>,
    /// How the gateway starts, shares and unloads it.
    pub serving: ServingPolicy,
    /// What AIMA does when its engine stops on its own.
    pub restart: super::RestartPolicy,
    pub restarts: super::Restarts,
    pub health: super::HealthChecks,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How the model gateway treats a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingPolicy {
    /// Stop the engine after this long without requests; `None`: never.
    pub idle_timeout: Option<std::time::Duration>,
    /// How long a request waits for the engine to load before it fails.
    pub load_timeout: std::time::Duration,
    /// Requests passed to the engine at once; the rest queue. `None`: no limit.
    pub max_concurrency: Option<u32>,
    /// Never stopped to make room for another engine.
    pub pinned: bool,
    /// The service a request for its model goes to when none of the model's runs.
    pub default: bool,
}

/// A duration the caller wrote for `field` (`600`, `30s`, `5m`, `1h 30m`), more than zero.
pub(super) fn positive_duration(
    field: &'static str,
    text: &str,
) -> Result<std::time::Duration, Invalid> {
    let flag = field.replace('_', "-");
    match super::parse_duration(text) {
        Some(d) if d.is_zero() => Err(Invalid::new(
            field,
            format!("{flag} must be more than zero; {}", super::DURATION_FORMS),
        )),
        Some(d) => Ok(d),
        None => Err(Invalid::new(
            field,
            format!(
                "{flag} '{text}' is not a duration; {}",
                super::DURATION_FORMS
            ),
        )),
    }
}

impl ServingPolicy {
    /// A cold start of a big model (70B, CUDA graphs) takes minutes.
    pub const DEFAULT_LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
    /// The largest `--max-concurrency` taken (the OpenAPI document says so too).
    pub const MAX_CONCURRENCY_LIMIT: u32 = 100_000;

    /// A policy from what the caller gave: durations such as `600`, `30s` or `1h 30m`.
    pub fn new(
        idle_timeout: Option<&str>,
        load_timeout: Option<&str>,
        max_concurrency: Option<u32>,
        pinned: bool,
        default: bool,
    ) -> Result<Self, Invalid> {
        let duration = positive_duration;
        if max_concurrency == Some(0) {
            return Err(Invalid::new(
                "max_concurrency",
                "max-concurrency 0 would never pass a request; give 1 or more, or leave it out for no limit",
            ));
        }
        if max_concurrency.is_some_and(|n| n > Self::MAX_CONCURRENCY_LIMIT) {
            return Err(Invalid::new(
                "max_concurrency",
                format!(
                    "max-concurrency above {} is no limit at all; leave it out instead",
                    Self::MAX_CONCURRENCY_LIMIT
                ),
            ));
        }
        Ok(Self {
            idle_timeout: idle_timeout
                .map(|t| duration("idle_timeout", t))
                .transpose()?,
            load_timeout: load_timeout
                .map(|t| duration("load_timeout", t))
                .transpose()?
                .unwrap_or(Self::DEFAULT_LOAD_TIMEOUT),
            max_concurrency,
            pinned,
            default,
        })
    }
}

impl Default for ServingPolicy {
    fn default() -> Self {
        Self {
            idle_timeout: None,
            load_timeout: Self::DEFAULT_LOAD_TIMEOUT,
            max_concurrency: None,
            pinned: false,
            default: false,
        }
    }
}

impl Service {
    /// A new service in `creating`; times keep millisecond precision, as stored.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        id: ServiceId,
        name: String,
        model_id: ModelId,
        engine: String,
        port: u16,
        gpu_memory_utilization: Option<f64>,
        env: Vec<EnvVar>,
        now: DateTime<Utc>,
    ) -> Self {
        let now = now.trunc_subsecs(3);
        Self {
            id,
            name,
            model_id,
            engine,
            port,
            status: ServiceStatus::Creating,
            status_reason: None,
            container_id: None,
            gpu_memory_utilization,
            gpu_index: None,
            env,
            serving: ServingPolicy::default(),
            restart: super::RestartPolicy::default(),
            restarts: super::Restarts::default(),
            health: super::HealthChecks::default(),
            created_at: now,
            updated_at: now,
        }
    }

    /// The Docker container name of this service.
    pub fn container_name(&self) -> String {
        format!("aima-{}", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_name_may_be_as_long_as_the_limit_and_no_longer() {
        let name = "s".repeat(crate::domain::NAME_MAX_CHARS);
        assert_eq!(validate_service_name(&name).expect("at the limit"), name);
        let longer = "s".repeat(crate::domain::NAME_MAX_CHARS + 1);
        assert_eq!(
            validate_service_name(&longer).expect_err("over").field,
            "name"
        );
    }

    #[test]
    fn the_container_is_named_after_the_service() {
        let id = ServiceId::random("vllm");
        let service = Service::create(
            id.clone(),
            "s".into(),
            crate::domain::ModelId::random(),
            "vllm".into(),
            8000,
            None,
            Vec::new(),
            Utc::now(),
        );
        assert_eq!(service.container_name(), format!("aima-{id}"));
    }

    #[test]
    fn only_starting_and_stopping_have_an_owner_at_work() {
        let transient: Vec<ServiceStatus> = ServiceStatus::ALL
            .into_iter()
            .filter(|s| s.is_transient())
            .collect();
        assert_eq!(
            transient,
            [ServiceStatus::Starting, ServiceStatus::Stopping]
        );
    }

    #[test]
    fn statuses_print_as_the_wire_writes_them() {
        for status in ServiceStatus::ALL {
            assert_eq!(status.to_string(), status.as_str());
            assert_eq!(status.as_str().parse::<ServiceStatus>().ok(), Some(status));
        }
        assert_eq!(ServiceStatus::Running.to_string(), "running");
    }

    #[test]
    fn env_keys_may_hold_digits_after_the_first_character() {
        let env: EnvVar = "CUDA_VISIBLE_DEVICES2=0"
            .parse()
            .expect("digits after the first");
        assert_eq!(
            (env.key.as_str(), env.value.as_str()),
            ("CUDA_VISIBLE_DEVICES2", "0")
        );
        assert!("2CUDA=0".parse::<EnvVar>().is_err());
    }

    #[test]
    fn service_ids_carry_their_engine_and_round_trip() {
        for engine in ["vllm", "sglang", "llamacpp", "ollama"] {
            let id = ServiceId::random(engine);
            assert_eq!(id.engine(), engine);
            assert_eq!(id.as_str().parse::<ServiceId>().expect("parses"), id);
        }
        for bad in [
            "",
            "svc-vllm",
            "svc-VLLM-1234abcd",
            "svc-v-llm-1234abcd",
            "model-1234abcd",
            "svc--1234abcd",
        ] {
            assert!(bad.parse::<ServiceId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn service_names_refuse_control_and_direction_characters() {
        assert_eq!(validate_service_name(" chat ").expect("valid"), "chat");
        for bad in [
            "",
            "a\nb",
            "evil\u{202E}gpj",
            "x\u{2067}y",
            "\u{1b}[31mred",
            "svc-vllm-1a2b3c4d",
            "model-00000000",
        ] {
            let err = validate_service_name(bad).expect_err(bad);
            assert_eq!(err.field, "name");
        }
    }

    #[test]
    fn serving_policies_parse_durations_and_refuse_nonsense() {
        let policy =
            ServingPolicy::new(Some("5m"), Some("90s"), Some(4), true, false).expect("valid");
        assert_eq!(
            policy.idle_timeout,
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(policy.load_timeout, std::time::Duration::from_secs(90));
        let bare = ServingPolicy::new(Some("600"), Some("30"), None, false, false).expect("valid");
        assert_eq!(bare.idle_timeout, Some(std::time::Duration::from_secs(600)));
        assert_eq!(bare.load_timeout, std::time::Duration::from_secs(30));
        assert_eq!(
            ServingPolicy::new(Some("soon"), None, None, false, false)
                .expect_err("soon")
                .message,
            "idle-timeout 'soon' is not a duration; give seconds (600) or a duration with a unit (10m, 30s)"
        );
        assert_eq!(
            ServingPolicy::new(None, None, None, false, false).expect("defaults"),
            ServingPolicy::default()
        );
        for (idle, load, max, field) in [
            (Some("soon"), None, None, "idle_timeout"),
            (Some("0s"), None, None, "idle_timeout"),
            (Some("0"), None, None, "idle_timeout"),
            (None, Some("-1"), None, "load_timeout"),
            (None, None, Some(0), "max_concurrency"),
        ] {
            let err = ServingPolicy::new(idle, load, max, false, false).expect_err(field);
            assert_eq!(err.field, field);
        }
    }

    #[test]
    fn only_resting_statuses_can_start() {
        let startable: Vec<_> = ServiceStatus::ALL
            .into_iter()
            .filter(|s| s.can_start())
            .collect();
        assert_eq!(
            startable,
            [
                ServiceStatus::Creating,
                ServiceStatus::Stopped,
                ServiceStatus::Failed,
                ServiceStatus::Backoff
            ]
        );
        for status in ServiceStatus::ALL {
            assert_eq!(
                status.as_str().parse::<ServiceStatus>().expect("parses"),
                status
            );
        }
    }

    #[test]
    fn requested_env_may_not_choose_gpus() {
        for key in GPU_SELECTING_ENV {
            let err = EnvVar::requested(&format!("{key}=0")).expect_err(key);
            assert_eq!(err.field, "env");
            assert!(
                err.message.starts_with(&format!(
                    "env {key} selects GPUs, and AIMA places GPUs itself; "
                )),
                "{}",
                err.message
            );
        }
        // Similar names are the caller's own, and stored rows stay readable.
        assert!(EnvVar::requested("CUDA_VISIBLE_DEVICES2=0").is_ok());
        assert!(EnvVar::requested("cuda_visible_devices=0").is_ok());
        assert!("CUDA_VISIBLE_DEVICES=0".parse::<EnvVar>().is_ok());
        assert!(EnvVar::requested("NO_EQUALS").is_err());
    }

    #[test]
    fn env_vars_parse_and_refuse_garbage() {
        let var: EnvVar = "STUB_FAIL=oom".parse().expect("valid");
        assert_eq!((var.key.as_str(), var.value.as_str()), ("STUB_FAIL", "oom"));
        assert_eq!("A=b=c".parse::<EnvVar>().expect("valid").value, "b=c");
        assert_eq!("EMPTY=".parse::<EnvVar>().expect("valid").value, "");
        for bad in ["NOEQUALS", "=x", "1A=x", "A-B=x", "A=line\nbreak"] {
            assert!(bad.parse::<EnvVar>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn gpu_fraction_must_be_in_zero_one() {
        assert!(validate_gpu_memory_utilization(0.45).is_ok());
        assert!(validate_gpu_memory_utilization(1.0).is_ok());
        for bad in [0.0, -0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert!(validate_gpu_memory_utilization(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lowest_free_port_skips_held_and_busy_ports() {
        let held: BTreeSet<u16> = [8000, 8002].into();
        assert_eq!(lowest_free_port((8000, 8010), &held, |_| true), Some(8001));
        assert_eq!(
            lowest_free_port((8000, 8010), &held, |p| p != 8001),
            Some(8003)
        );
        assert_eq!(lowest_free_port((8000, 8002), &held, |p| p != 8001), None);
    }
}
