//! The Hugging Face hub's HTTP API, as much as a pull needs: whether a repository
//! exists, its files with their sizes and SHA-256 (`/api/models/{repo}/tree/{rev}`), and
//! a file's bytes from an offset (`/{repo}/resolve/{rev}/{path}` with `Range`), so an
//! interrupted download resumes. `HF_ENDPOINT` moves it (a mirror, or a test's server);
//! `HF_TOKEN` opens private and gated repositories; `HTTPS_PROXY` is honoured. Blocking
//! (ureq): callers run it off the async threads.

use std::io::Read;
use std::time::Duration;

use serde::Deserialize;
use ureq::http::{HeaderMap, StatusCode, header};

/// How long a call may wait for the hub to answer (a download's body has no limit).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a file listing may be.
const LISTING_LIMIT: u64 = 64 << 20;
/// A registration waits this long for the hub's word on a repository, then goes ahead.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The hub to ask, and as whom.
#[derive(Clone)]
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

/// One file of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    pub path: String,
    pub size: u64,
    /// The SHA-256 the hub keeps for a large (LFS) file; small files have none.
    pub sha256: Option<String>,
}

/// Why the hub could not help.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The hub answered that the repository is not there (or not visible to us).
    #[error("{0}")]
    NoSuchRepo(String),
    /// The hub could not be reached or answered in an unexpected way.
    #[error("{0}")]
    Unreachable(String),
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    oid: String,
}

type Response = ureq::http::Response<ureq::Body>;

impl Hub {
    /// A hub at `endpoint` (`https://huggingface.co` unless `HF_ENDPOINT` says otherwise).
    pub fn new(endpoint: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .proxy(ureq::Proxy::try_from_env())
            .user_agent(concat!("aima/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token,
            agent,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn get(
        &self,
        url: &str,
        range_from: u64,
        timeout: Option<Duration>,
    ) -> Result<Response, HubError> {
        let mut request = self.agent.get(url);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if range_from > 0 {
            request = request.header(header::RANGE, format!("bytes={range_from}-"));
        }
        request
            .config()
            .timeout_recv_response(timeout)
            .build()
            .call()
            .map_err(|e| self.unreachable(&e))
    }

    /// Whether `repo` exists: `Ok` when it does, the hub's own words when it does not.
    pub fn check(&self, repo: &str) -> Result<(), HubError> {
        let url = format!("{}/api/models/{repo}", self.endpoint);
        let response = self.get(&url, 0, Some(CHECK_TIMEOUT))?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(self.refusal(repo, response))
    }

    /// Every file of `repo` at `revision`, following the listing's pages.
    pub fn files(&self, repo: &str, revision: &str) -> Result<Vec<HubFile>, HubError> {
        let mut url = Some(format!(
            "{}/api/models/{repo}/tree/{revision}?recursive=true",
            self.endpoint
        ));
        let mut files = Vec::new();
        while let Some(next) = url.take() {
            let response = self.get(&next, 0, Some(ANSWER_TIMEOUT))?;
            if !response.status().is_success() {
                return Err(self.refusal(repo, response));
            }
            url = next_page(response.headers());
            // A listing is a few KiB a file; the limit keeps a broken hub from filling memory.
            let reader = response
                .into_body()
                .into_with_config()
                .limit(LISTING_LIMIT)
                .reader();
            let entries: Vec<TreeEntry> = serde_json::from_reader(reader).map_err(|e| {
                HubError::Unreachable(format!(
                    "the hub at {} listed {repo}'s files in a shape AIMA does not read: {e}",
                    self.endpoint
                ))
            })?;
            files.extend(
                entries
                    .into_iter()
                    .filter(|e| e.kind == "file")
                    .map(|e| HubFile {
                        path: e.path,
                        size: e.size,
                        sha256: e.lfs.map(|l| l.oid),
                    }),
            );
        }
        Ok(files)
    }

    /// The bytes of `file` from `offset` on: a reader of the body, and whether the hub
    /// began at `offset` (206) rather than at the start (200).
    pub fn download(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
        offset: u64,
    ) -> Result<(impl Read + use<>, bool), HubError> {
        let url = format!("{}/{repo}/resolve/{revision}/{file}", self.endpoint);
        let response = self.get(&url, offset, Some(ANSWER_TIMEOUT))?;
        let status = response.status();
        if status == StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
            // The part file is as long as the file, or longer: start again.
            return self.download(repo, revision, file, 0);
        }
        if !status.is_success() {
            return Err(self.refusal(repo, response));
        }
        let resumed = status == StatusCode::PARTIAL_CONTENT;
        Ok((response.into_body().into_reader(), resumed))
    }

    fn unreachable(&self, e: &ureq::Error) -> HubError {
        HubError::Unreachable(format!(
            "cannot reach the Hugging Face hub at {}: {e}; check the network, or point HF_ENDPOINT at a mirror",
            self.endpoint
        ))
    }

    /// The hub's refusal in one line, with what fixes it.
    fn refusal(&self, repo: &str, response: Response) -> HubError {
        let status = response.status();
        let code = header_text(response.headers(), "x-error-code");
        let said = header_text(response.headers(), "x-error-message");
        let mut body = String::new();
        let _ = response
            .into_body()
            .into_with_config()
            .limit(64 * 1024)
            .reader()
            .read_to_string(&mut body);
        let said = said
            .or_else(|| {
                serde_json::from_str::<serde_json::Value>(&body)
                    .ok()?
                    .get("error")?
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| status.to_string());
        let said = crate::domain::one_line(&said);
        let gone = matches!(
            code.as_deref(),
            Some("RepoNotFound" | "RevisionNotFound" | "EntryNotFound")
        ) || status == StatusCode::NOT_FOUND;
        if gone || status == StatusCode::UNAUTHORIZED {
            let hint = if self.token.is_some() {
                "check the name"
            } else {
                "check the name, or set HF_TOKEN for a private or gated repository"
            };
            return HubError::NoSuchRepo(format!(
                "the hub at {} has no model repository '{repo}' ({} {said}); {hint}",
                self.endpoint,
                status.as_u16()
            ));
        }
        if status == StatusCode::FORBIDDEN {
            return HubError::NoSuchRepo(format!(
                "the hub at {} refused '{repo}' ({said}); accept its terms on the hub and set HF_TOKEN",
                self.endpoint
            ));
        }
        HubError::Unreachable(format!(
            "the hub at {} answered {} for '{repo}': {said}",
            self.endpoint,
            status.as_u16()
        ))
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The `rel="next"` URL of a `Link` header (the hub pages long listings).
fn next_page(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// The files a pull fetches: all of them, less the weights in older formats that a
/// repository carries beside its safetensors (engines load the safetensors).
pub fn wanted(files: &[HubFile]) -> Vec<HubFile> {
    let has_safetensors = files.iter().any(|f| f.path.ends_with(".safetensors"));
    const OLDER: [&str; 7] = [".bin", ".pth", ".pt", ".h5", ".msgpack", ".onnx", ".ot"];
    files
        .iter()
        .filter(|f| {
            !has_safetensors
                || !(OLDER.iter().any(|ext| f.path.ends_with(ext))
                    || f.path.starts_with("original/")
                    || f.path.starts_with("onnx/")
                    || f.path.ends_with(".gguf"))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> HubFile {
        HubFile {
            path: path.into(),
            size: 1,
            sha256: None,
        }
    }

    #[test]
    fn a_pull_skips_older_weight_formats_beside_safetensors() {
        let files = [
            file("config.json"),
            file("model.safetensors"),
            file("pytorch_model.bin"),
            file("original/consolidated.pth"),
            file("tokenizer.json"),
        ];
        let names: Vec<String> = wanted(&files).into_iter().map(|f| f.path).collect();
        assert_eq!(
            names,
            ["config.json", "model.safetensors", "tokenizer.json"]
        );
        // Without safetensors the .bin weights are the model.
        let names: Vec<String> = wanted(&[file("config.json"), file("pytorch_model.bin")])
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(names, ["config.json", "pytorch_model.bin"]);
    }

    #[test]
    fn the_next_page_comes_from_the_link_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LINK,
            "<https://hub/api/models/a/b/tree/main?cursor=x>; rel=\"next\""
                .parse()
                .expect("header"),
        );
        assert_eq!(
            next_page(&headers).as_deref(),
            Some("https://hub/api/models/a/b/tree/main?cursor=x")
        );
        assert_eq!(next_page(&HeaderMap::new()), None);
    }
}
