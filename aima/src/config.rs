//! Settings: flag > environment > `$AIMA_HOME/config.toml` > default.
//!
//! Every bad value is refused with the setting's name, where it came from, and the
//! accepted form, so an operator can fix it from the one error line.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

// The one rule for durations: bare seconds ("30") or units ("1m 30s", "500ms").
use crate::domain::parse_duration;

pub const DEFAULT_ADDR: &str = "127.0.0.1:9090";
pub const DEFAULT_PORT_RANGE: PortRange = PortRange {
    first: 8000,
    last: 8999,
};
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Engine ports are published on loopback unless the operator opens them wider.
pub const DEFAULT_PUBLISH_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Connections served at once; more wait in the kernel's backlog until one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// Gateway requests that may wait (for a turn at a busy engine) before more are refused.
pub const DEFAULT_GATEWAY_QUEUE: usize = 256;
/// The file under `$AIMA_HOME` that may hold the API token.
pub const TOKEN_FILE: &str = "token";

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {setting} '{value}': expected {expected}")]
    Invalid {
        setting: String,
        value: String,
        expected: &'static str,
    },
    #[error("cannot read {path}: {message}; fix or remove the file")]
    File { path: PathBuf, message: String },
    #[error("cannot find a home directory: HOME is not set; pass --home or set AIMA_HOME")]
    NoHome,
    #[error(
        "API token file {path} can be read by other users (mode {mode:o}); run 'chmod 600 {path}'"
    )]
    TokenFileOpen { path: PathBuf, mode: u32 },
}

/// Inclusive range of host ports handed to services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// `FIRST-LAST`, as `AIMA_PORT_RANGE` writes it.
    pub fn parse(s: &str) -> Option<Self> {
        let (first, last) = s.trim().split_once('-')?;
        let range = Self {
            first: first.trim().parse().ok()?,
            last: last.trim().parse().ok()?,
        };
        (range.first >= 1 && range.first <= range.last).then_some(range)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// `$AIMA_HOME/config.toml`. Unknown keys are errors so a typo is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    addr: Option<String>,
    port_range: Option<String>,
    /// `30s`, `"30"` or `30`: bare seconds, as every duration.
    #[serde(default, deserialize_with = "text_or_number")]
    shutdown_timeout: Option<String>,
    publish_addr: Option<String>,
    model_roots: Option<String>,
    max_connections: Option<String>,
    gateway_queue: Option<String>,
    mcp_max_sessions: Option<String>,
    host_ram_budget: Option<String>,
    gateway_auto_create: Option<bool>,
    #[serde(default)]
    engines: BTreeMap<String, EngineOverride>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineOverride {
    image: Option<String>,
}

/// A setting written as text (`"30s"`) or as a bare number (`30`), kept as text.
fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Written>::deserialize(d)?.map(|w| match w {
        Written::Text(text) => text,
        Written::Number(n) => n.to_string(),
    }))
}

/// Values given on the command line; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub home: Option<PathBuf>,
    pub addr: Option<String>,
}

/// Resolved settings for the daemon and the CLI.
#[derive(Debug, Clone)]
pub struct Settings {
    pub home: PathBuf,
    pub addr: SocketAddr,
    pub port_range: PortRange,
    pub shutdown_timeout: Duration,
    /// Engine name → image, from `AIMA_ENGINE_IMAGE_<ENGINE>` or `[engines.<engine>] image`.
    pub engine_images: BTreeMap<String, String>,
    /// `AIMA_SIMULATE_GPUS`: GPUs to pretend to have (name, MiB), instead of NVML.
    pub simulate_gpus: Option<Vec<(String, u64)>>,
    /// `AIMA_SIMULATE_GPU_RELEASE`: how long a simulated GPU keeps a stopped engine's memory.
    pub simulate_gpu_release: Duration,
    /// `AIMA_RESTART_BACKOFF`: the first wait before a failed service is restarted (10s);
    /// the cap is 30 times it, and 60 times it of healthy running forgets earlier failures.
    pub restart_backoff: crate::domain::Backoff,
    /// `AIMA_API_TOKEN`, else the contents of `$AIMA_HOME/token`: the bearer token every
    /// request must carry. The daemon refuses a non-loopback address without one.
    pub api_token: Option<ApiToken>,
    /// `AIMA_PUBLISH_ADDR`: the host address engine ports are published on.
    pub publish_addr: IpAddr,
    /// `AIMA_MODEL_ROOTS`: directories local models must lie under (symlinks resolved).
    pub model_roots: Vec<PathBuf>,
    /// `AIMA_MAX_CONNECTIONS`: API connections served at once.
    pub max_connections: usize,
    /// `AIMA_GATEWAY_QUEUE`: gateway requests that may wait at once; more get a 503.
    pub gateway_queue: usize,
    /// `AIMA_MCP_MAX_SESSIONS`: MCP sessions over HTTP at once; a new one beyond is a 503.
    pub mcp_max_sessions: usize,
    /// `AIMA_HOST_RAM_BUDGET`: host memory engines running on the CPU may claim together
    /// (`16GiB`); none: the host's total. Claims never exceed what the kernel reports
    /// available either.
    pub host_ram_budget: Option<u64>,
    /// `AIMA_GATEWAY_AUTO_CREATE`: a gateway request naming a model with no service
    /// creates one (the recommended engine; an event says so). Default true.
    pub gateway_auto_create: bool,
    /// `HF_ENDPOINT`: the Hugging Face hub pulls and registrations ask (a mirror, or a
    /// test's server); `https://huggingface.co` by default.
    pub hf_endpoint: String,
    /// `HF_TOKEN`: the hub token for private and gated repositories.
    pub hf_token: Option<String>,
}

/// A secret that must not end up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// A token from text: at least 16 visible ASCII characters, else `None`.
    pub fn parse(value: &str) -> Option<Self> {
        parse_token(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(…)")
    }
}

impl Settings {
    /// Resolves settings from flags, the process environment and the config file.
    pub fn resolve(flags: &Flags) -> Result<Self, ConfigError> {
        Self::resolve_with(
            flags,
            |key| std::env::var(key).ok(),
            std::env::vars().collect(),
        )
    }

    /// Like [`Settings::resolve`] with an explicit environment, for tests.
    pub fn resolve_with(
        flags: &Flags,
        env: impl Fn(&str) -> Option<String>,
        all_env: Vec<(String, String)>,
    ) -> Result<Self, ConfigError> {
        let home = match (&flags.home, env("AIMA_HOME").filter(|h| !h.is_empty())) {
            (Some(home), _) => home.clone(),
            (None, Some(home)) => PathBuf::from(home),
            (None, None) => PathBuf::from(env("HOME").ok_or(ConfigError::NoHome)?).join(".aima"),
        };
        // A relative home would move with the working directory of each command.
        let home = absolute(&home).map_err(|_| ConfigError::Invalid {
            setting: "AIMA_HOME".to_owned(),
            value: home.display().to_string(),
            expected: "an absolute directory, or a relative one from a working directory that exists",
        })?;
        let file_path = home.join("config.toml");
        let file = read_config_file(&file_path)?;
        let in_file = |key: &str| format!("{key} in {}", file_path.display());

        let addr = pick(
            flags.addr.clone().map(|v| ("--addr".to_owned(), v)),
            env("AIMA_ADDR").map(|v| ("AIMA_ADDR".to_owned(), v)),
            file.addr.map(|v| (in_file("addr"), v)),
        );
        let addr = match addr {
            Some((setting, value)) => parse_addr(&value).ok_or(ConfigError::Invalid {
                setting,
                value,
                expected: "HOST:PORT such as 127.0.0.1:9090",
            })?,
            None => DEFAULT_ADDR.parse().expect("default address parses"),
        };

        let port_range = match pick(
            None,
            env("AIMA_PORT_RANGE").map(|v| ("AIMA_PORT_RANGE".to_owned(), v)),
            file.port_range.map(|v| (in_file("port_range"), v)),
        ) {
            Some((setting, value)) => PortRange::parse(&value).ok_or(ConfigError::Invalid {
                setting,
                value,
                expected: "FIRST-LAST with 1 <= FIRST <= LAST <= 65535, such as 8000-8999",
            })?,
            None => DEFAULT_PORT_RANGE,
        };

        let shutdown_timeout = match pick(
            None,
            env("AIMA_SHUTDOWN_TIMEOUT").map(|v| ("AIMA_SHUTDOWN_TIMEOUT".to_owned(), v)),
            file.shutdown_timeout
                .map(|v| (in_file("shutdown_timeout"), v)),
        ) {
            Some((setting, value)) => parse_duration(&value).ok_or(ConfigError::Invalid {
                setting,
                value,
                expected: "seconds (30) or a duration with a unit (500ms, 2m)",
            })?,
            None => DEFAULT_SHUTDOWN_TIMEOUT,
        };

        let known = |engine: &str| crate::engines::CATALOG.iter().any(|e| e.name == engine);
        let mut engine_images = BTreeMap::new();
        for (engine, over) in file.engines {
            if !known(&engine) {
                return Err(ConfigError::Invalid {
                    setting: in_file("[engines]"),
                    value: engine,
                    expected: "an engine of the catalog: vllm, sglang, llamacpp or ollama",
                });
            }
            if let Some(image) = over.image {
                engine_images.insert(engine, image);
            }
        }
        for (key, value) in all_env {
            if let Some(engine) = key.strip_prefix("AIMA_ENGINE_IMAGE_") {
                if !known(&engine.to_ascii_lowercase()) {
                    return Err(ConfigError::Invalid {
                        setting: key.clone(),
                        value,
                        expected: "a variable named AIMA_ENGINE_IMAGE_<ENGINE> with ENGINE one of VLLM, SGLANG, LLAMACPP, OLLAMA",
                    });
                }
                if value.trim().is_empty() || engine.is_empty() {
                    return Err(ConfigError::Invalid {
                        setting: key,
                        value,
                        expected: "an image reference such as vllm/vllm-openai:latest",
                    });
                }
                engine_images.insert(engine.to_ascii_lowercase(), value);
            }
        }

        let simulate_gpus = match env("AIMA_SIMULATE_GPUS").filter(|v| !v.trim().is_empty()) {
            Some(value) => Some(crate::gpu::parse_simulated(&value).ok_or(
                ConfigError::Invalid {
                    setting: "AIMA_SIMULATE_GPUS".to_owned(),
                    value,
                    expected: "NAME:MiB[,NAME:MiB…] such as H200:143771,A100:81920",
                },
            )?),
            None => None,
        };

        let api_token = match env("AIMA_API_TOKEN") {
            Some(value) => Some(parse_token(&value).ok_or(ConfigError::Invalid {
                setting: "AIMA_API_TOKEN".to_owned(),
                value: "(hidden)".to_owned(),
                expected: "a token of 16 or more printable characters without spaces, such as the output of 'openssl rand -hex 32'",
            })?),
            None => read_token_file(&home.join(TOKEN_FILE))?,
        };

        let publish_addr = match pick(
            None,
            env("AIMA_PUBLISH_ADDR").map(|v| ("AIMA_PUBLISH_ADDR".to_owned(), v)),
            file.publish_addr.map(|v| (in_file("publish_addr"), v)),
        ) {
            Some((setting, value)) => value.trim().parse().map_err(|_| ConfigError::Invalid {
                setting,
                value,
                expected: "an IP address of this host such as 127.0.0.1, or 0.0.0.0 for every interface",
            })?,
            None => DEFAULT_PUBLISH_ADDR,
        };

        let model_roots = match pick(
            None,
            env("AIMA_MODEL_ROOTS").map(|v| ("AIMA_MODEL_ROOTS".to_owned(), v)),
            file.model_roots.map(|v| (in_file("model_roots"), v)),
        ) {
            Some((setting, value)) => parse_roots(&value).ok_or(ConfigError::Invalid {
                setting,
                value,
                expected: "absolute directories separated by ':', such as /srv/models:/data/weights",
            })?,
            None => vec![home.join("models")],
        };

        let max_connections = match pick(
            None,
            env("AIMA_MAX_CONNECTIONS").map(|v| ("AIMA_MAX_CONNECTIONS".to_owned(), v)),
            file.max_connections
                .map(|v| (in_file("max_connections"), v)),
        ) {
            Some((setting, value)) => value
                .trim()
                .parse()
                .ok()
                .filter(|n| (16..=1_000_000).contains(n))
                .ok_or(ConfigError::Invalid {
                    setting,
                    value,
                    expected: "a number of connections from 16 to 1000000",
                })?,
            None => DEFAULT_MAX_CONNECTIONS,
        };

        let gateway_queue = match pick(
            None,
            env("AIMA_GATEWAY_QUEUE").map(|v| ("AIMA_GATEWAY_QUEUE".to_owned(), v)),
            file.gateway_queue.map(|v| (in_file("gateway_queue"), v)),
        ) {
            Some((setting, value)) => value
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or(ConfigError::Invalid {
                    setting,
                    value,
                    expected: "a number of waiting requests from 1 to 1000000",
                })?,
            None => DEFAULT_GATEWAY_QUEUE,
        };

        let mcp_max_sessions = match pick(
            None,
            env("AIMA_MCP_MAX_SESSIONS").map(|v| ("AIMA_MCP_MAX_SESSIONS".to_owned(), v)),
            file.mcp_max_sessions
                .map(|v| (in_file("mcp_max_sessions"), v)),
        ) {
            Some((setting, value)) => value
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=100_000).contains(n))
                .ok_or(ConfigError::Invalid {
                    setting,
                    value,
                    expected: "a number of sessions from 1 to 100000",
                })?,
            None => crate::mcp::DEFAULT_MAX_SESSIONS,
        };

        let host_ram_budget = match pick(
            None,
            env("AIMA_HOST_RAM_BUDGET").map(|v| ("AIMA_HOST_RAM_BUDGET".to_owned(), v)),
            file.host_ram_budget
                .map(|v| (in_file("host_ram_budget"), v)),
        ) {
            Some((setting, value)) => Some(
                value
                    .trim()
                    .parse::<bytesize::ByteSize>()
                    .ok()
                    .map(|size| size.as_u64())
                    .filter(|bytes| *bytes >= 1 << 20)
                    .ok_or(ConfigError::Invalid {
                        setting,
                        value,
                        expected: "a size of 1MiB or more, like 16GiB or 512MiB",
                    })?,
            ),
            None => None,
        };

        let gateway_auto_create = match env("AIMA_GATEWAY_AUTO_CREATE") {
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        setting: "AIMA_GATEWAY_AUTO_CREATE".to_owned(),
                        value,
                        expected: "true or false",
                    });
                }
            },
            None => file.gateway_auto_create.unwrap_or(true),
        };

        let simulate_gpu_release = match env("AIMA_SIMULATE_GPU_RELEASE") {
            Some(value) => parse_duration(&value).ok_or(ConfigError::Invalid {
                setting: "AIMA_SIMULATE_GPU_RELEASE".to_owned(),
                value,
                expected: "seconds (2) or a duration with a unit (500ms)",
            })?,
            None => Duration::ZERO,
        };

        let restart_backoff = match env("AIMA_RESTART_BACKOFF") {
            Some(value) => crate::domain::Backoff {
                first: parse_duration(&value)
                    .filter(|d| *d >= Duration::from_millis(100))
                    .ok_or(ConfigError::Invalid {
                        setting: "AIMA_RESTART_BACKOFF".to_owned(),
                        value,
                        expected: "100ms or more: seconds (10) or a duration with a unit (500ms)",
                    })?,
            },
            None => crate::domain::Backoff::default(),
        };

        Ok(Self {
            home,
            addr,
            port_range,
            shutdown_timeout,
            engine_images,
            simulate_gpus,
            simulate_gpu_release,
            restart_backoff,
            api_token,
            publish_addr,
            model_roots,
            max_connections,
            gateway_queue,
            mcp_max_sessions,
            host_ram_budget,
            gateway_auto_create,
            hf_endpoint: env("HF_ENDPOINT")
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| "https://huggingface.co".to_owned()),
            hf_token: env("HF_TOKEN").filter(|v| !v.trim().is_empty()),
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.home.join("data")
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir().join("aima.db")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.home.join("daemon.lock")
    }
}

/// `path` made absolute against the working directory, without touching the filesystem.
fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_owned())
    } else {
        std::path::absolute(path)
    }
}

/// A usable token: long enough to resist guessing, and safe in an HTTP header.
fn parse_token(value: &str) -> Option<ApiToken> {
    let token = value.trim();
    (token.len() >= 16 && token.chars().all(|c| c.is_ascii_graphic()))
        .then(|| ApiToken(token.to_owned()))
}

/// `$AIMA_HOME/token`, if it exists; like an ssh key, it must not be readable by others.
fn read_token_file(path: &Path) -> Result<Option<ApiToken>, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(ConfigError::File {
                path: path.to_owned(),
                message: e.to_string(),
            });
        }
    };
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::TokenFileOpen {
                path: path.to_owned(),
                mode,
            });
        }
    }
    parse_token(&text)
        .map(Some)
        .ok_or_else(|| ConfigError::File {
            path: path.to_owned(),
            message: "the token must be 16 or more printable characters without spaces (for example the output of 'openssl rand -hex 32')".to_owned(),
        })
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(offset.min(text.len()))];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Colon-separated absolute directories, none empty.
fn parse_roots(value: &str) -> Option<Vec<PathBuf>> {
    let roots: Vec<PathBuf> = value
        .split(':')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(PathBuf::from)
        .collect();
    (!roots.is_empty() && roots.iter().all(|r| r.is_absolute())).then_some(roots)
}

/// The first of flag, environment and file that is set, with the setting's name.
fn pick(
    flag: Option<(String, String)>,
    env: Option<(String, String)>,
    file: Option<(String, String)>,
) -> Option<(String, String)> {
    flag.or(env).or(file)
}

fn read_config_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: match e.span() {
                Some(span) => {
                    let (line, column) = line_and_column(&text, span.start);
                    format!("line {line}, column {column}: {}", e.message())
                }
                None => e.message().to_owned(),
            },
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        // A home that is not a directory shows up later as "home not writable", with the fix.
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(ConfigFile::default()),
        Err(e) => Err(ConfigError::File {
            path: path.to_owned(),
            message: e.to_string(),
        }),
    }
}

fn parse_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse() {
        return Some(addr);
    }
    // Allow names such as localhost:9090; resolution is local for those.
    s.to_socket_addrs().ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(flags: Flags, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = env.clone();
        Settings::resolve_with(
            &flags,
            move |key| {
                lookup
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            },
            env,
        )
    }

    fn home_flag(dir: &Path) -> Flags {
        Flags {
            home: Some(dir.to_owned()),
            addr: None,
        }
    }

    #[test]
    fn defaults_apply() {
        let s = resolve(Flags::default(), &[("HOME", "/home/op")]).expect("resolves");
        assert_eq!(s.home, PathBuf::from("/home/op/.aima"));
        assert_eq!(s.addr.to_string(), DEFAULT_ADDR);
        assert_eq!(s.port_range, DEFAULT_PORT_RANGE);
        assert_eq!(s.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
        assert_eq!(
            s.database_path(),
            PathBuf::from("/home/op/.aima/data/aima.db")
        );
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join("config.toml"),
            "addr = \"127.0.0.1:7000\"\nshutdown_timeout = \"5s\"\nport_range = \"9000-9100\"\n[engines.vllm]\nimage = \"file-image\"\n",
        )
        .expect("write");
        let from_file = resolve(home_flag(dir.path()), &[]).expect("resolves");
        assert_eq!(from_file.addr.port(), 7000);
        assert_eq!(from_file.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(
            from_file.port_range,
            PortRange {
                first: 9000,
                last: 9100
            }
        );
        assert_eq!(from_file.engine_images["vllm"], "file-image");

        let env = [
            ("AIMA_ADDR", "127.0.0.1:7001"),
            ("AIMA_SHUTDOWN_TIMEOUT", "250ms"),
            ("AIMA_ENGINE_IMAGE_VLLM", "env-image"),
        ];
        let from_env = resolve(home_flag(dir.path()), &env).expect("resolves");
        assert_eq!(from_env.addr.port(), 7001);
        assert_eq!(from_env.shutdown_timeout, Duration::from_millis(250));
        assert_eq!(from_env.engine_images["vllm"], "env-image");
        let budget = resolve(
            home_flag(dir.path()),
            &[("AIMA_HOST_RAM_BUDGET", "1.5 GiB")],
        )
        .expect("resolves");
        assert_eq!(budget.host_ram_budget, Some(3 << 29));

        let mut flags = home_flag(dir.path());
        flags.addr = Some("127.0.0.1:7002".into());
        assert_eq!(resolve(flags, &env).expect("resolves").addr.port(), 7002);
    }

    #[test]
    fn bad_values_name_the_setting_and_the_form() {
        let cases = [
            ("AIMA_ADDR", "nowhere", "HOST:PORT"),
            ("AIMA_ADDR", "127.0.0.1:99999", "HOST:PORT"),
            ("AIMA_PORT_RANGE", "9000-8000", "FIRST-LAST"),
            ("AIMA_PORT_RANGE", "0-10", "FIRST-LAST"),
            ("AIMA_SHUTDOWN_TIMEOUT", "3x", "duration"),
            ("AIMA_ENGINE_IMAGE_VLLM", " ", "image"),
            ("AIMA_SIMULATE_GPUS", "H200", "NAME:MiB"),
            ("AIMA_ENGINE_IMAGE_VLMM", "my/image:1", "ENGINE one of VLLM"),
            ("AIMA_PUBLISH_ADDR", "everywhere", "IP address"),
            ("AIMA_MODEL_ROOTS", "models:/srv", "absolute directories"),
            ("AIMA_MAX_CONNECTIONS", "3", "from 16"),
            ("AIMA_GATEWAY_QUEUE", "0", "waiting requests"),
            ("AIMA_MCP_MAX_SESSIONS", "0", "number of sessions"),
            ("AIMA_HOST_RAM_BUDGET", "lots", "like 16GiB"),
            ("AIMA_HOST_RAM_BUDGET", "12", "1MiB or more"),
        ];
        for (key, value, expected) in cases {
            let err = resolve(Flags::default(), &[("HOME", "/h"), (key, value)]).expect_err(key);
            let msg = err.to_string();
            assert!(
                msg.contains(key) && msg.contains(value.trim()) && msg.contains(expected),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_bad_token_is_refused_without_echoing_it() {
        let msg = resolve(
            Flags::default(),
            &[("HOME", "/h"), ("AIMA_API_TOKEN", "short secret")],
        )
        .expect_err("short token")
        .to_string();
        assert!(
            msg.contains("AIMA_API_TOKEN") && msg.contains("16 or more"),
            "{msg}"
        );
        assert!(!msg.contains("short secret"), "{msg}");
    }

    #[test]
    fn the_token_file_is_read_and_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join(TOKEN_FILE);
        std::fs::write(&file, "0123456789abcdef0123\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let msg = resolve(home_flag(dir.path()), &[])
            .expect_err("world-readable token file")
            .to_string();
        assert!(msg.contains("chmod 600") && msg.contains("token"), "{msg}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let settings = resolve(home_flag(dir.path()), &[]).expect("private token file");
        assert_eq!(
            settings.api_token.as_ref().map(ApiToken::expose),
            Some("0123456789abcdef0123")
        );
        // The environment wins over the file.
        let settings = resolve(
            home_flag(dir.path()),
            &[("AIMA_API_TOKEN", "from-the-environment-1")],
        )
        .expect("env token");
        assert_eq!(
            settings.api_token.as_ref().map(ApiToken::expose),
            Some("from-the-environment-1")
        );
    }

    #[test]
    fn a_relative_home_is_made_absolute_and_roots_default_under_it() {
        let s = resolve(
            Flags {
                home: Some(PathBuf::from("rel-home")),
                addr: None,
            },
            &[],
        )
        .expect("resolves");
        assert!(s.home.is_absolute(), "{}", s.home.display());
        assert!(s.home.ends_with("rel-home"));
        assert_eq!(s.model_roots, vec![s.home.join("models")]);
        assert_eq!(s.publish_addr, DEFAULT_PUBLISH_ADDR);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join("config.toml"),
            "port_range = \"21000-21100\"\n  adr = \"x\"\n",
        )
        .expect("write");
        let msg = resolve(home_flag(dir.path()), &[])
            .expect_err("typo")
            .to_string();
        assert!(msg.contains("config.toml") && msg.contains("adr"), "{msg}");
        assert!(msg.contains("line 2, column 3"), "{msg}");
    }

    #[test]
    fn duration_settings_take_bare_seconds_and_units() {
        let s = resolve(
            Flags::default(),
            &[
                ("HOME", "/home/op"),
                ("AIMA_SHUTDOWN_TIMEOUT", "20"),
                ("AIMA_RESTART_BACKOFF", "2"),
                ("AIMA_SIMULATE_GPU_RELEASE", "1"),
            ],
        )
        .expect("bare seconds");
        assert_eq!(s.shutdown_timeout, Duration::from_secs(20));
        assert_eq!(s.restart_backoff.first, Duration::from_secs(2));
        assert_eq!(s.simulate_gpu_release, Duration::from_secs(1));
        let s = resolve(
            Flags::default(),
            &[("HOME", "/home/op"), ("AIMA_SHUTDOWN_TIMEOUT", "1m 30s")],
        )
        .expect("units");
        assert_eq!(s.shutdown_timeout, Duration::from_secs(90));
        for written in ["shutdown_timeout = 45\n", "shutdown_timeout = \"45\"\n"] {
            let dir = tempfile::tempdir().expect("tmp");
            std::fs::write(dir.path().join("config.toml"), written).expect("write");
            let s = resolve(home_flag(dir.path()), &[]).expect(written);
            assert_eq!(s.shutdown_timeout, Duration::from_secs(45), "{written}");
        }
        let msg = resolve(
            Flags::default(),
            &[("HOME", "/home/op"), ("AIMA_SHUTDOWN_TIMEOUT", "soon")],
        )
        .expect_err("soon")
        .to_string();
        assert_eq!(
            msg,
            "invalid AIMA_SHUTDOWN_TIMEOUT 'soon': expected seconds (30) or a duration with a unit (500ms, 2m)"
        );
    }
}
