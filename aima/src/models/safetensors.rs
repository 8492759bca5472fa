//! safetensors (Hugging Face): each file's header, the dtype and shape of every tensor,
//! parsed and checked by the `safetensors` crate; the data is never read.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use safetensors::tensor::Metadata;

use super::{ModelFileError, ModelRoots, json_where, origin};
use crate::domain::{Known, ModelFacts};

/// Largest header read: the format's own limit (100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// The shard files an index (`model.safetensors.index.json`) names, next to it.
pub(super) fn shards(index: &Path, roots: &ModelRoots) -> Result<Vec<PathBuf>, ModelFileError> {
    let parsed = super::read_json(roots, index)?;
    let map = parsed["weight_map"].as_object().ok_or_else(|| {
        ModelFileError::new(index, "has no weight_map; is it a safetensors index?")
    })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for shard in map.values() {
        let name = shard.as_str().filter(|n| {
            !n.is_empty() && !n.contains('/') && !n.contains('\\') && *n != ".." && *n != "."
        });
        let Some(name) = name else {
            return Err(ModelFileError::new(
                index,
                format!("names a shard {shard} that is not a file name in its directory"),
            ));
        };
        let file = dir.join(name);
        if !files.contains(&file) {
            files.push(file);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(ModelFileError::new(index, "names no shard files"));
    }
    Ok(files)
}

/// The weights' size, parameters and dominant dtype across `files`.
pub(super) fn read(files: &[PathBuf], roots: &ModelRoots) -> Result<ModelFacts, ModelFileError> {
    // Every file is checked before any is read: one link out of the roots refuses all.
    for file in files {
        roots.check(file)?;
    }
    let (mut bytes, mut params) = (0u64, 0u64);
    let mut by_dtype: BTreeMap<String, u64> = BTreeMap::new();
    for file in files {
        let metadata = header(file, roots)?;
        for info in metadata.tensors().values() {
            let elements: u64 = info.shape.iter().map(|d| *d as u64).product();
            let size = (info.data_offsets.1 - info.data_offsets.0) as u64;
            bytes = bytes.saturating_add(size);
            params = params.saturating_add(elements);
            *by_dtype.entry(format!("{:?}", info.dtype)).or_default() += size;
        }
    }
    let all = if files.len() == 1 {
        origin(&files[0], "")
    } else {
        format!("{} safetensors shards", files.len())
    };
    let mut facts = ModelFacts {
        format: Some("safetensors".to_owned()),
        size_bytes: Some(Known::new(bytes, format!("tensor headers of {all}"))),
        params: Some(Known::new(params, format!("tensor shapes in {all}"))),
        ..ModelFacts::default()
    };
    if let Some((dtype, _)) = by_dtype.iter().max_by_key(|(_, bytes)| **bytes) {
        facts.quantization = Some(Known::new(dtype.clone(), format!("tensor dtypes in {all}")));
    }
    Ok(facts)
}

/// One file's header, checked against the file's length. The messages never quote the
/// file's bytes: a text file's first 8 bytes read as a length are a meaningless number.
fn header(file: &Path, roots: &ModelRoots) -> Result<Metadata, ModelFileError> {
    let fail = |problem: String| ModelFileError::new(file, problem);
    let (mut handle, length) = super::open(roots, file)?;
    let mut prefix = [0u8; 8];
    handle
        .read_exact(&mut prefix)
        .map_err(|_| fail("is too short for a safetensors header; download it again".to_owned()))?;
    let size = u64::from_le_bytes(prefix);
    if size > MAX_HEADER {
        return Err(fail(
            "is not a safetensors file (its header length is implausible); pass the model's weights"
                .to_owned(),
        ));
    }
    if size + 8 > length {
        return Err(fail(
            "is truncated or not a safetensors file (its header runs past the end of the file); download it again"
                .to_owned(),
        ));
    }
    let mut text = vec![0u8; usize::try_from(size).unwrap_or_default()];
    handle
        .read_exact(&mut text)
        .map_err(|e| fail(format!("cannot be read: {e}")))?;
    let metadata: Metadata = serde_json::from_slice(&text).map_err(|e| {
        fail(format!(
            "has a safetensors header AIMA cannot read ({})",
            json_where(&e)
        ))
    })?;
    let needed = 8 + size + metadata.data_len() as u64;
    if length < needed {
        return Err(fail(format!(
            "is truncated: its header lists {needed} bytes but the file has {length}; download it again"
        )));
    }
    Ok(metadata)
}
