//! Model files, read without loading them: GGUF metadata and tensor infos, safetensors
//! headers (sharded or not) and a Hugging Face `config.json`, turned into the facts a
//! memory estimate needs, each with the file and key it came from. Only headers are
//! read, so a 16 GB model is inspected in milliseconds.

mod gguf;
mod hf_config;
mod safetensors;

use std::path::{Path, PathBuf};

use crate::domain::ModelFacts;

/// A model file AIMA cannot read: the file, what is wrong, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", file.display())]
pub struct ModelFileError {
    pub file: PathBuf,
    pub problem: String,
}

impl ModelFileError {
    pub fn new(file: &Path, problem: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            problem: problem.into(),
        }
    }
}

/// The facts of the model at `path`: a `.gguf` or `.safetensors` file, or a directory
/// holding one GGUF model (split files too) or a Hugging Face layout (`config.json`
/// with `*.safetensors`, sharded with `model.safetensors.index.json`).
pub fn inspect(path: &Path) -> Result<ModelFacts, ModelFileError> {
    // A reader bug must not take the daemon down with a caller's file.
    std::panic::catch_unwind(|| inspect_path(path)).unwrap_or_else(|_| {
        Err(ModelFileError::new(
            path,
            "could not be read (the reader failed on it); check that it is a complete model file",
        ))
    })
}

fn inspect_path(path: &Path) -> Result<ModelFacts, ModelFileError> {
    if path.is_file() {
        return match extension(path).as_deref() {
            Some("gguf") => gguf::read(&[path.to_owned()]),
            Some("safetensors") => {
                let mut facts = safetensors::read(&[path.to_owned()])?;
                if let Some(dir) = path.parent() {
                    hf_config::add(dir, &mut facts)?;
                }
                Ok(facts)
            }
            _ => Err(ModelFileError::new(
                path,
                "is not a model file AIMA can read; pass a .gguf or .safetensors file, or the directory that holds them",
            )),
        };
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| ModelFileError::new(path, format!("cannot be listed: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let of = |ext: &str| -> Vec<PathBuf> {
        files
            .iter()
            .filter(|f| extension(f).as_deref() == Some(ext))
            .cloned()
            .collect()
    };
    if let Some(index) = files
        .iter()
        .find(|f| f.to_string_lossy().ends_with(".safetensors.index.json"))
    {
        let shards = safetensors::shards(index)?;
        let mut facts = safetensors::read(&shards)?;
        hf_config::add(path, &mut facts)?;
        return Ok(facts);
    }
    let tensors = of("safetensors");
    if !tensors.is_empty() {
        let mut facts = safetensors::read(&tensors)?;
        hf_config::add(path, &mut facts)?;
        return Ok(facts);
    }
    let ggufs = of("gguf");
    match ggufs.as_slice() {
        [] => Err(ModelFileError::new(
            path,
            "holds no model files (.gguf, or .safetensors with config.json); pass the directory or file of the weights",
        )),
        [one] => gguf::read(std::slice::from_ref(one)),
        several => {
            // `name-00001-of-00003.gguf`: one model split in parts; anything else is
            // several models, and which one is meant is the operator's to say.
            if several.iter().all(|f| gguf::is_split_part(f)) {
                gguf::read(several)
            } else {
                Err(ModelFileError::new(
                    path,
                    format!(
                        "holds {} GGUF files that are not parts of one model; pass --path to the one to serve",
                        several.len()
                    ),
                ))
            }
        }
    }
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// The name a fact came from: the file name, and the key inside it.
fn origin(file: &Path, key: &str) -> String {
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    if key.is_empty() {
        name
    } else {
        format!("{name}: {key}")
    }
}
