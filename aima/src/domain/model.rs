use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};

use super::Invalid;
use super::id::{is_hex8, random_hex8};

/// Longest model name accepted, in characters.
pub const NAME_MAX_CHARS: usize = 128;
const REPO_MAX_CHARS: usize = 512;
const PATH_MAX_CHARS: usize = 4096;

/// `model-` followed by eight hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(String);

impl ModelId {
    const PREFIX: &'static str = "model-";

    pub fn random() -> Self {
        Self(format!("{}{}", Self::PREFIX, random_hex8()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ModelId {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix(Self::PREFIX) {
            Some(hex) if is_hex8(hex) => Ok(Self(s.to_owned())),
            _ => Err(Invalid::new(
                "id",
                format!("'{s}' is not a model id; model ids look like model-1a2b3c4d"),
            )),
        }
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a model's weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelSource {
    Ollama,
    Huggingface,
    Modelscope,
    Local,
}

impl ModelSource {
    pub const ALL: [ModelSource; 4] = [
        Self::Ollama,
        Self::Huggingface,
        Self::Modelscope,
        Self::Local,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ollama => "ollama",
            Self::Huggingface => "huggingface",
            Self::Modelscope => "modelscope",
            Self::Local => "local",
        }
    }
}

impl FromStr for ModelSource {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|source| source.as_str() == s)
            .ok_or_else(|| {
                Invalid::new(
                    "source",
                    format!("unknown source '{s}'; expected one of ollama, huggingface, modelscope, local"),
                )
            })
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model's lifecycle status. Registration is all a model needs until engines pull weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelStatus {
    Registered,
}

impl ModelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
        }
    }
}

impl FromStr for ModelStatus {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "registered" => Ok(Self::Registered),
            other => Err(Invalid::new(
                "status",
                format!("unknown model status '{other}'"),
            )),
        }
    }
}

/// A validated request to register a model: exactly one of `repo` (remote sources)
/// or `path` (local source) is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub source: ModelSource,
    pub repo: Option<String>,
    pub path: Option<String>,
}

impl ModelSpec {
    /// Checks the shape of a registration; whether a local path exists is the caller's I/O.
    pub fn new(
        name: &str,
        source: &str,
        repo: Option<&str>,
        path: Option<&str>,
    ) -> Result<Self, Invalid> {
        let name = validate_name(name)?;
        let source: ModelSource = source.parse()?;
        let repo = repo.filter(|r| !r.is_empty());
        let path = path.filter(|p| !p.is_empty());
        match source {
            ModelSource::Local => {
                if repo.is_some() {
                    return Err(Invalid::new(
                        "repo",
                        "source 'local' takes a path, not a repo; pass --path PATH instead of --repo",
                    ));
                }
                let path = path.ok_or_else(|| {
                    Invalid::new("path", "source 'local' needs the directory or file of the weights; pass --path PATH")
                })?;
                Ok(Self {
                    name,
                    source,
                    repo: None,
                    path: Some(validate_path(path)?),
                })
            }
            remote => {
                if path.is_some() {
                    return Err(Invalid::new(
                        "path",
                        format!(
                            "source '{remote}' takes a repo, not a path; pass --repo REPO instead of --path, or use --source local"
                        ),
                    ));
                }
                let repo = repo.ok_or_else(|| {
                    Invalid::new("repo", format!("source '{remote}' needs the model's repository; pass --repo REPO (for example tinyllama or org/name)"))
                })?;
                Ok(Self {
                    name,
                    source,
                    repo: Some(validate_repo(repo)?),
                    path: None,
                })
            }
        }
    }
}

fn validate_name(name: &str) -> Result<String, Invalid> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Invalid::new(
            "name",
            "model name is empty; pass --name NAME",
        ));
    }
    let chars = name.chars().count();
    if chars > NAME_MAX_CHARS {
        return Err(Invalid::new(
            "name",
            format!("model name is {chars} characters long; the limit is {NAME_MAX_CHARS}"),
        ));
    }
    if name.chars().any(super::is_unsafe_char) {
        return Err(Invalid::new(
            "name",
            "model name contains control or text-direction characters; use printable text",
        ));
    }
    if super::looks_like_an_id(name) {
        return Err(Invalid::new(
            "name",
            format!(
                "model name '{name}' has the form of an id, so it could name the wrong thing; pick another name"
            ),
        ));
    }
    Ok(name.to_owned())
}

fn validate_repo(repo: &str) -> Result<String, Invalid> {
    if repo.chars().count() > REPO_MAX_CHARS {
        return Err(Invalid::new(
            "repo",
            format!("repo is longer than {REPO_MAX_CHARS} characters"),
        ));
    }
    if repo.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid::new(
            "repo",
            format!(
                "repo '{}' contains whitespace; pass a repository such as tinyllama or org/name",
                repo.escape_debug()
            ),
        ));
    }
    Ok(repo.to_owned())
}

fn validate_path(path: &str) -> Result<String, Invalid> {
    if path.chars().count() > PATH_MAX_CHARS {
        return Err(Invalid::new(
            "path",
            format!("path is longer than {PATH_MAX_CHARS} characters"),
        ));
    }
    if !path.starts_with('/') {
        return Err(Invalid::new(
            "path",
            format!("path '{path}' is relative; pass an absolute path"),
        ));
    }
    if path.chars().any(super::is_unsafe_char) {
        return Err(Invalid::new(
            "path",
            "path contains control or text-direction characters; rename the directory",
        ));
    }
    // Docker's bind syntax is HOST:CONTAINER:MODE, so a ':' in the host path breaks the
    // mount at start; refuse it now rather than then.
    if path.contains(':') {
        return Err(Invalid::new(
            "path",
            format!(
                "path '{path}' contains ':', which Docker cannot mount; rename the directory or link it from a path without ':'"
            ),
        ));
    }
    Ok(path.to_owned())
}

/// A registered model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub id: ModelId,
    pub name: String,
    pub source: ModelSource,
    pub repo: Option<String>,
    pub path: Option<String>,
    pub status: ModelStatus,
    pub created_at: DateTime<Utc>,
    /// What AIMA read from its files or was told: size, shape, context.
    pub facts: super::ModelFacts,
}

impl Model {
    /// A newly registered model; the clock is the caller's so this stays pure. Times
    /// keep millisecond precision, as stored, so a create and a later get agree.
    pub fn register(spec: ModelSpec, id: ModelId, now: DateTime<Utc>) -> Self {
        let now = now.trunc_subsecs(3);
        Self {
            id,
            name: spec.name,
            source: spec.source,
            repo: spec.repo,
            path: spec.path,
            status: ModelStatus::Registered,
            created_at: now,
            facts: super::ModelFacts::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<ModelSpec, Invalid>) -> &'static str {
        r.expect_err("expected a validation error").field
    }

    #[test]
    fn remote_sources_take_a_repo() {
        for source in ["ollama", "huggingface", "modelscope"] {
            let spec = ModelSpec::new(" llama ", source, Some("org/llama"), None).expect("valid");
            assert_eq!(spec.name, "llama");
            assert_eq!(spec.source.as_str(), source);
            assert_eq!(spec.repo.as_deref(), Some("org/llama"));
            assert_eq!(spec.path, None);
        }
    }

    #[test]
    fn sources_print_as_they_are_written() {
        for source in ["ollama", "huggingface", "modelscope", "local"] {
            let parsed: ModelSource = source.parse().expect("a source");
            assert_eq!(parsed.to_string(), source);
        }
    }

    #[test]
    fn repo_and_path_may_be_as_long_as_the_limit_and_no_longer() {
        let repo = "r".repeat(REPO_MAX_CHARS);
        assert!(ModelSpec::new("m", "ollama", Some(&repo), None).is_ok());
        let longer = "r".repeat(REPO_MAX_CHARS + 1);
        assert_eq!(
            field_of(ModelSpec::new("m", "ollama", Some(&longer), None)),
            "repo"
        );
        let path = format!("/{}", "p".repeat(PATH_MAX_CHARS - 1));
        assert!(ModelSpec::new("m", "local", None, Some(&path)).is_ok());
        let longer = format!("/{}", "p".repeat(PATH_MAX_CHARS));
        assert_eq!(
            field_of(ModelSpec::new("m", "local", None, Some(&longer))),
            "path"
        );
    }

    #[test]
    fn local_source_takes_an_absolute_path() {
        let spec = ModelSpec::new("m", "local", None, Some("/models/m")).expect("valid");
        assert_eq!(spec.path.as_deref(), Some("/models/m"));
        assert_eq!(spec.repo, None);
    }

    #[test]
    fn empty_repo_or_path_counts_as_absent() {
        assert!(ModelSpec::new("m", "ollama", Some("x"), Some("")).is_ok());
        assert_eq!(
            field_of(ModelSpec::new("m", "ollama", Some(""), None)),
            "repo"
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let long = "x".repeat(NAME_MAX_CHARS + 1);
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, &'a str);
        let cases: [Case; 15] = [
            ("", "ollama", Some("r"), None, "name"),
            ("   ", "ollama", Some("r"), None, "name"),
            (&long, "ollama", Some("r"), None, "name"),
            ("a\u{7}b", "ollama", Some("r"), None, "name"),
            ("m", "s3", Some("r"), None, "source"),
            ("m", "ollama", None, None, "repo"),
            ("m", "ollama", Some("r"), Some("/p"), "path"),
            ("m", "local", Some("r"), Some("/p"), "repo"),
            ("m", "local", None, None, "path"),
            ("m", "local", None, Some("relative/dir"), "path"),
            ("admin\u{202E}txt.exe", "ollama", Some("r"), None, "name"),
            ("model-1a2b3c4d", "ollama", Some("r"), None, "name"),
            ("svc-vllm-1a2b3c4d", "ollama", Some("r"), None, "name"),
            ("m", "local", None, Some("/srv/a:b"), "path"),
            ("m", "local", None, Some("/srv/a\u{2066}b"), "path"),
        ];
        for (name, source, repo, path, field) in cases {
            assert_eq!(
                field_of(ModelSpec::new(name, source, repo, path)),
                field,
                "{name:?} {source} {repo:?} {path:?}"
            );
        }
        assert_eq!(
            field_of(ModelSpec::new("m", "ollama", Some("has space"), None)),
            "repo"
        );
    }

    #[test]
    fn longest_name_is_accepted() {
        let name = "é".repeat(NAME_MAX_CHARS);
        assert!(ModelSpec::new(&name, "ollama", Some("r"), None).is_ok());
    }

    #[test]
    fn model_ids_round_trip_and_reject_garbage() {
        let id = ModelId::random();
        assert_eq!(id.as_str().parse::<ModelId>().expect("parses"), id);
        for bad in [
            "",
            "model-",
            "model-XYZ",
            "svc-vllm-1234abcd",
            "model-1234abcd0",
        ] {
            assert!(bad.parse::<ModelId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_round_trip() {
        for source in ModelSource::ALL {
            assert_eq!(
                source.as_str().parse::<ModelSource>().expect("parses"),
                source
            );
        }
    }
}
