//! GGUF (llama.cpp, Ollama): metadata keys and tensor infos, read with the `gguf-rs`
//! crate; the tensor data is never read, but the file must be long enough to hold it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{ModelFileError, origin};
use crate::domain::{Known, ModelFacts};

/// True for `name-00001-of-00003.gguf`, a part of a split model.
pub(super) fn is_split_part(file: &Path) -> bool {
    let five_digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    file.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|stem| stem.rsplit_once("-of-"))
        .and_then(|(head, total)| Some((head.rsplit_once('-')?.1, total)))
        .is_some_and(|(part, total)| five_digits(part) && five_digits(total))
}

/// The facts of a GGUF model in one file or split across `files` (metadata from the
/// first, tensors from all).
pub(super) fn read(files: &[PathBuf]) -> Result<ModelFacts, ModelFileError> {
    let mut facts = ModelFacts {
        format: Some("gguf".to_owned()),
        ..ModelFacts::default()
    };
    let (mut bytes, mut params) = (0u64, 0u64);
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for (i, file) in files.iter().enumerate() {
        let model = decode(file)?;
        if i == 0 {
            describe(file, model.metadata(), &mut facts);
            // llama.cpp's split files say how many parts there are: all or nothing.
            let parts = model
                .metadata()
                .get("split.count")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            if parts != files.len() as u64 {
                return Err(ModelFileError::new(
                    file,
                    format!(
                        "is one of the {parts} parts of a split model, and {} of them are here; put every part in one directory and pass that directory",
                        files.len()
                    ),
                ));
            }
        }
        let mut end = 0u64;
        for tensor in model.tensors() {
            let elements = tensor.shape.iter().product::<u64>();
            let size = stored_size(tensor.kind, elements).ok_or_else(|| {
                ModelFileError::new(
                    file,
                    format!(
                        "holds tensor {} of GGML type {}, which AIMA does not know; a newer llama.cpp format?",
                        tensor.name, tensor.kind
                    ),
                )
            })?;
            bytes = bytes.saturating_add(size);
            params = params.saturating_add(elements);
            *by_type.entry(type_name(tensor.kind)).or_default() += size;
            end = end.max(tensor.offset.saturating_add(size));
        }
        let needed = model.data_offset().saturating_add(end);
        let length = std::fs::metadata(file)
            .map_err(|e| ModelFileError::new(file, format!("cannot be read: {e}")))?
            .len();
        if length < needed {
            return Err(ModelFileError::new(
                file,
                format!(
                    "is truncated: its header lists {needed} bytes of tensors but the file has {length}; download it again"
                ),
            ));
        }
    }
    let all = files
        .iter()
        .map(|f| origin(f, ""))
        .collect::<Vec<_>>()
        .join(", ");
    facts.size_bytes = Some(Known::new(bytes, format!("tensor sizes in {all}")));
    facts.params = Some(Known::new(params, format!("tensor shapes in {all}")));
    // The type that holds most of the weights names the quantization (`Q4_K`).
    if let Some((name, _)) = by_type.iter().max_by_key(|(_, bytes)| **bytes) {
        facts.quantization = Some(Known::new(name.clone(), format!("tensor types in {all}")));
    }
    Ok(facts)
}

/// Metadata arrays (a tokenizer's 128k tokens) are skipped past, not kept.
const MAX_ARRAY: u64 = 64;

fn decode(file: &Path) -> Result<gguf_rs::GGUFModel, ModelFileError> {
    use std::io::Read;
    let not_gguf = |why: &str| {
        ModelFileError::new(
            file,
            format!("is not a GGUF file ({why}); pass a .gguf model"),
        )
    };
    let handle = std::fs::File::open(file)
        .map_err(|e| ModelFileError::new(file, format!("cannot be read: {e}")))?;
    // Buffered: the header is read a few bytes at a time, a million reads for a
    // tokenizer's vocabulary otherwise.
    let mut reader = std::io::BufReader::with_capacity(1 << 20, handle);
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .map_err(|_| not_gguf("shorter than a header"))?;
    if &magic != b"GGUF" {
        return Err(not_gguf("no GGUF magic"));
    }
    let mut container =
        gguf_rs::GGUFContainer::new(gguf_rs::ByteOrder::LE, Box::new(reader), MAX_ARRAY);
    container.decode().map_err(|e| {
        ModelFileError::new(
            file,
            format!(
                "has a GGUF header AIMA cannot read ({e}); the file may be truncated or damaged"
            ),
        )
    })
}

/// Architecture, context and attention shape from the `{arch}.*` keys.
fn describe(file: &Path, kv: &BTreeMap<String, Value>, facts: &mut ModelFacts) {
    let Some(arch) = kv.get("general.architecture").and_then(Value::as_str) else {
        return;
    };
    facts.architecture = Some(Known::new(
        arch.to_owned(),
        origin(file, "general.architecture"),
    ));
    let number = |suffix: &str| -> Option<Known<u32>> {
        let key = format!("{arch}.{suffix}");
        let value = kv.get(&key)?;
        // Per-layer arrays (some architectures vary heads by layer): the largest.
        let n = value
            .as_u64()
            .or_else(|| value.as_array()?.iter().filter_map(Value::as_u64).max())?;
        Some(Known::new(u32::try_from(n).ok()?, origin(file, &key)))
    };
    facts.context_length = number("context_length");
    facts.layers = number("block_count");
    facts.attention_heads = number("attention.head_count");
    facts.kv_heads = number("attention.head_count_kv");
    facts.embedding_size = number("embedding_length");
    facts.head_dim = number("attention.key_length");
}

fn type_name(kind: u32) -> String {
    gguf_rs::GGMLType::try_from(kind).map_or_else(|_| format!("type {kind}"), |t| t.to_string())
}

/// Bytes of `elements` values stored as GGML type `kind`: whole blocks of (block size,
/// bytes per block), as ggml's type traits define them (gguf-py's `GGML_QUANT_SIZES`).
/// The `gguf-rs` crate's own per-tensor size gets BF16, the integer types and some
/// quantizations wrong, so AIMA counts with this table.
fn stored_size(kind: u32, elements: u64) -> Option<u64> {
    let (block, bytes): (u64, u64) = match kind {
        0 => (1, 4),           // F32
        1 | 25 | 30 => (1, 2), // F16, I16, BF16
        2 => (32, 18),         // Q4_0
        3 => (32, 20),         // Q4_1
        6 => (32, 22),         // Q5_0
        7 => (32, 24),         // Q5_1
        8 => (32, 34),         // Q8_0
        9 => (32, 40),         // Q8_1
        10 => (256, 84),       // Q2_K
        11 | 21 => (256, 110), // Q3_K, IQ3_S
        12 => (256, 144),      // Q4_K
        13 => (256, 176),      // Q5_K
        14 => (256, 210),      // Q6_K
        15 => (256, 292),      // Q8_K
        16 | 35 => (256, 66),  // IQ2_XXS, TQ2_0
        17 => (256, 74),       // IQ2_XS
        18 => (256, 98),       // IQ3_XXS
        19 => (256, 50),       // IQ1_S
        20 => (32, 18),        // IQ4_NL
        22 => (256, 82),       // IQ2_S
        23 => (256, 136),      // IQ4_XS
        24 => (1, 1),          // I8
        26 => (1, 4),          // I32
        27 | 28 => (1, 8),     // I64, F64
        29 => (256, 56),       // IQ1_M
        34 => (256, 54),       // TQ1_0
        39 => (32, 17),        // MXFP4
        _ => return None,
    };
    elements.div_ceil(block).checked_mul(bytes)
}
