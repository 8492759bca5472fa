//! `aima pull`: a Hugging Face model's files into the first model root, with byte
//! progress. A file downloads to `NAME.part` and takes its name only once whole and, for
//! the large (LFS) files, once its SHA-256 matches the hub's; an interrupted pull resumes
//! from its part files. The disk must have room for what is left before a byte is
//! fetched. Afterwards the model's engine mounts the files instead of downloading them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{Daemon, DaemonError};
use crate::domain::{EventKind, Invalid, Model, ModelId, ModelSource};
use crate::models::hub::{Hub, HubError, HubFile};

/// The revision pulled.
const REVISION: &str = "main";
/// How often a file's progress is reported while it downloads.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What a pull is doing, as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullUpdate {
    /// Bytes of `file` done so far (`completed` of `total`), and of the whole pull.
    Progress {
        file: String,
        completed: u64,
        total: u64,
        all_completed: u64,
        all_total: u64,
    },
    /// Everything is here, at `path`.
    Done {
        path: String,
        files: usize,
        bytes: u64,
    },
    /// It stopped: why, and what to do.
    Failed(String),
}

/// A model's pull, held while it runs: a second pull of it is refused meanwhile.
struct Pulling {
    daemon: Daemon,
    model: ModelId,
}

impl Drop for Pulling {
    fn drop(&mut self) {
        self.daemon
            .inner
            .pulls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.model);
    }
}

impl Daemon {
    /// The hub this daemon asks (`HF_ENDPOINT`, `HF_TOKEN`).
    pub(super) fn hub(&self) -> Hub {
        Hub::new(
            &self.settings().hf_endpoint,
            self.settings().hf_token.clone(),
        )
    }

    /// Starts pulling `reference`'s files; what is wrong before the first byte (not a
    /// Hugging Face model, no such repository, no room) is an error here, the rest
    /// comes as updates. Dropping the receiver stops the pull; its part files stay for
    /// the next one.
    pub async fn pull_model(
        &self,
        reference: &str,
    ) -> Result<mpsc::Receiver<PullUpdate>, DaemonError> {
        let model = self.get_model(reference).await?;
        let repo = match (model.source, &model.repo) {
            (ModelSource::Huggingface, Some(repo)) => repo.clone(),
            (source, _) => {
                return Err(Invalid::new(
                    "source",
                    format!(
                        "model {} comes from {source}, not Hugging Face: {}",
                        model.name,
                        match source {
                            ModelSource::Ollama => "its Ollama service pulls it when it starts",
                            ModelSource::Local => "its files are here already",
                            _ => "its engine downloads it when it starts",
                        }
                    ),
                )
                .into());
            }
        };
        let pulling = {
            let mut pulls = self.inner.pulls.lock().unwrap_or_else(|p| p.into_inner());
            if !pulls.insert(model.id.clone()) {
                return Err(DaemonError::Conflict(format!(
                    "model {} is being pulled already; wait for that pull, or stop it and pull again",
                    model.name
                )));
            }
            Pulling {
                daemon: self.clone(),
                model: model.id.clone(),
            }
        };
        let hub = self.hub();
        let listing = {
            let (hub, repo) = (hub.clone(), repo.clone());
            tokio::task::spawn_blocking(move || hub.files(&repo, REVISION))
                .await
                .map_err(|e| DaemonError::Unavailable(format!("the pull's listing failed: {e}")))?
                .map_err(hub_error)?
        };
        let files = crate::models::hub::wanted(&listing);
        let root = self
            .settings()
            .model_roots
            .first()
            .cloned()
            .ok_or_else(|| {
                DaemonError::Unavailable("no model root to pull into; set AIMA_MODEL_ROOTS".into())
            })?;
        let dest = root.join(&repo);
        tokio::fs::create_dir_all(&dest).await.map_err(|e| {
            DaemonError::Unavailable(format!("cannot create {}: {e}", dest.display()))
        })?;
        check_room(&dest, &files)?;
        let (tx, rx) = mpsc::channel(64);
        let daemon = self.clone();
        tokio::spawn(async move {
            let _pulling = pulling;
            let outcome = {
                let (files, dest, tx) = (files.clone(), dest.clone(), tx.clone());
                tokio::task::spawn_blocking(move || fetch_all(&hub, &repo, &files, &dest, &tx))
                    .await
                    .unwrap_or_else(|e| Err(format!("the pull stopped: {e}")))
            };
            let update = match outcome {
                Ok(bytes) => match daemon.take_files(&model, &dest, files.len(), bytes).await {
                    Ok(()) => PullUpdate::Done {
                        path: dest.display().to_string(),
                        files: files.len(),
                        bytes,
                    },
                    Err(e) => PullUpdate::Failed(e),
                },
                Err(e) => PullUpdate::Failed(e),
            };
            if let PullUpdate::Failed(why) = &update {
                tracing::warn!(model = %model.name, "pull failed: {why}");
            }
            let _ = tx.send(update).await;
        });
        Ok(rx)
    }

    /// Points the model at its pulled files and reads what they say.
    async fn take_files(
        &self,
        model: &Model,
        dest: &Path,
        files: usize,
        bytes: u64,
    ) -> Result<(), String> {
        let path = dest.to_path_buf();
        let roots = self.settings().model_roots.clone();
        let mut facts = tokio::task::spawn_blocking(move || {
            crate::models::inspect(&path, &crate::models::ModelRoots::new(&roots))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the pulled files cannot be read: {e}"))?;
        // What the operator stated stays.
        facts.size_bytes = model.facts.size_bytes.clone().or(facts.size_bytes);
        facts.context_length = model.facts.context_length.clone().or(facts.context_length);
        let (id, text) = (model.id.clone(), dest.display().to_string());
        self.store()
            .run(move |store| store.set_model_files(&id, &text, &facts))
            .await
            .map_err(|e| e.to_string())?;
        self.events()
            .publish_model(
                &model.id,
                EventKind::Note,
                format!(
                    "pulled {files} files ({}) into {}",
                    bytesize::ByteSize(bytes).display().iec(),
                    dest.display()
                ),
            )
            .await;
        Ok(())
    }
}

/// Downloads every file not yet whole; returns the bytes of them all.
fn fetch_all(
    hub: &Hub,
    repo: &str,
    files: &[HubFile],
    dest: &Path,
    tx: &mpsc::Sender<PullUpdate>,
) -> Result<u64, String> {
    let all_total: u64 = files.iter().map(|f| f.size).sum();
    let mut all_completed = 0;
    for file in files {
        let target = inside(dest, &file.path)?;
        if std::fs::metadata(&target).is_ok_and(|m| m.len() == file.size) {
            all_completed += file.size;
            continue;
        }
        let done_before = all_completed;
        fetch_one(hub, repo, file, &target, tx, |completed| {
            PullUpdate::Progress {
                file: file.path.clone(),
                completed,
                total: file.size,
                all_completed: done_before + completed,
                all_total,
            }
        })?;
        all_completed += file.size;
    }
    Ok(all_total)
}

/// `dest/relative`, refusing a path from the hub that would leave `dest`.
fn inside(dest: &Path, relative: &str) -> Result<PathBuf, String> {
    let path = Path::new(relative);
    let plain = path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return Err(format!(
            "the hub listed a file outside the repository: {relative}"
        ));
    }
    Ok(dest.join(path))
}

/// Downloads one file to `target` (through `target.part`), resuming what is there.
fn fetch_one(
    hub: &Hub,
    repo: &str,
    file: &HubFile,
    target: &Path,
    tx: &mpsc::Sender<PullUpdate>,
    progress: impl Fn(u64) -> PullUpdate,
) -> Result<(), String> {
    let part = PathBuf::from(format!("{}.part", target.display()));
    if let Some(dir) = part.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let have = std::fs::metadata(&part).map_or(0, |m| m.len());
    let (mut body, resumed) = hub
        .download(repo, REVISION, &file.path, have)
        .map_err(|e| e.to_string())?;
    let cannot_write = |e: std::io::Error| format!("cannot write {}: {e}", part.display());
    let mut hasher = Sha256::new();
    let mut out = if resumed && have > 0 {
        hash_file(&part, &mut hasher)?;
        std::fs::OpenOptions::new().append(true).open(&part)
    } else {
        std::fs::File::create(&part)
    }
    .map_err(cannot_write)?;
    let mut completed = if resumed { have } else { 0 };
    let mut reported = Instant::now();
    let _ = tx.try_send(progress(completed));
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        let read = match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(format!(
                    "the download of {} broke off after {completed} of {} bytes ({e}); pull again to resume",
                    file.path, file.size
                ));
            }
        };
        out.write_all(&buffer[..read]).map_err(cannot_write)?;
        hasher.update(&buffer[..read]);
        completed += read as u64;
        if reported.elapsed() >= PROGRESS_EVERY {
            reported = Instant::now();
            // A client that hung up ends the pull here; its part file stays.
            if tx.is_closed() {
                return Err("the client went away".to_owned());
            }
            let _ = tx.try_send(progress(completed));
        }
    }
    out.flush().map_err(cannot_write)?;
    drop(out);
    if completed != file.size {
        return Err(format!(
            "the download of {} ended after {completed} of {} bytes; pull again to resume",
            file.path, file.size
        ));
    }
    if let Some(expected) = &file.sha256 {
        let got = hex(&hasher.finalize());
        if !got.eq_ignore_ascii_case(expected) {
            let _ = std::fs::remove_file(&part);
            return Err(format!(
                "checksum mismatch for {}: the hub says sha256 {expected}, the download is {got}; it was removed, pull again",
                file.path
            ));
        }
    }
    std::fs::rename(&part, target)
        .map_err(|e| format!("cannot move {} into place: {e}", part.display()))?;
    let _ = tx.try_send(progress(completed));
    Ok(())
}

fn hash_file(path: &Path, hasher: &mut Sha256) -> Result<(), String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    std::io::copy(&mut file, hasher)
        .map(drop)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses a pull whose remaining bytes do not fit on `dest`'s file system.
fn check_room(dest: &Path, files: &[HubFile]) -> Result<(), DaemonError> {
    let mut needed = 0u64;
    for file in files {
        let Ok(target) = inside(dest, &file.path) else {
            continue;
        };
        if std::fs::metadata(&target).is_ok_and(|m| m.len() == file.size) {
            continue;
        }
        let part = PathBuf::from(format!("{}.part", target.display()));
        let have = std::fs::metadata(&part).map_or(0, |m| m.len());
        needed += file.size.saturating_sub(have);
    }
    let stats = nix::sys::statvfs::statvfs(dest).map_err(|e| {
        DaemonError::Unavailable(format!(
            "cannot read the free space of {}: {e}",
            dest.display()
        ))
    })?;
    let free = stats.blocks_available() * stats.fragment_size();
    if needed > free {
        let size = |b: u64| bytesize::ByteSize(b).display().iec().to_string();
        return Err(DaemonError::NoRoom(format!(
            "not enough disk space in {}: the files need {} more, {} is free; free some space, or put a model root on a larger disk first in AIMA_MODEL_ROOTS",
            dest.display(),
            size(needed),
            size(free)
        )));
    }
    Ok(())
}

/// The hub's refusal as the caller's mistake (404), its silence as unavailability (503).
pub(super) fn hub_error(e: HubError) -> DaemonError {
    match e {
        HubError::NoSuchRepo(why) => DaemonError::Missing(why),
        HubError::Unreachable(why) => DaemonError::Unavailable(why),
    }
}
