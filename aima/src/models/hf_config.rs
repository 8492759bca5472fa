//! A Hugging Face `config.json`: the attention shape and trained context the safetensors
//! headers do not carry. Multimodal models keep the language model's under `text_config`.

use std::path::Path;

use serde_json::Value;

use super::{ModelFileError, ModelRoots, origin};
use crate::domain::{Known, ModelFacts};

/// Adds what `dir/config.json` says to `facts`; a directory without one adds nothing.
/// One that is there (a link too) must resolve under `roots`.
pub(super) fn add(
    dir: &Path,
    roots: &ModelRoots,
    facts: &mut ModelFacts,
) -> Result<(), ModelFileError> {
    let file = dir.join("config.json");
    if file.symlink_metadata().is_err() {
        return Ok(());
    }
    let config: Value = super::read_json(roots, &file)?;
    let (scope, prefix) = match config.get("text_config") {
        Some(text) if text.is_object() => (text, "text_config."),
        _ => (&config, ""),
    };
    let number = |key: &str| -> Option<Known<u32>> {
        let n = scope.get(key)?.as_u64()?;
        Some(Known::new(
            u32::try_from(n).ok()?,
            origin(&file, &format!("{prefix}{key}")),
        ))
    };
    facts.layers = number("num_hidden_layers");
    facts.attention_heads = number("num_attention_heads");
    facts.kv_heads = number("num_key_value_heads");
    facts.embedding_size = number("hidden_size");
    facts.head_dim = number("head_dim");
    facts.context_length = number("max_position_embeddings");
    let architecture = config["architectures"][0]
        .as_str()
        .map(|a| (a, "architectures"))
        .or_else(|| config["model_type"].as_str().map(|m| (m, "model_type")));
    if let Some((name, key)) = architecture {
        facts.architecture = Some(Known::new(name.to_owned(), origin(&file, key)));
    }
    // Packed integer tensors (AWQ, GPTQ) say little; the config names the method.
    if let Some(method) = config["quantization_config"]["quant_method"].as_str() {
        facts.quantization = Some(Known::new(
            method.to_owned(),
            origin(&file, "quantization_config.quant_method"),
        ));
    }
    Ok(())
}
