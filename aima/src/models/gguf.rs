//! GGUF (llama.cpp, Ollama): metadata keys and tensor infos, read with the `gguf-rs`
//! crate; the tensor data is never read, but the file must be long enough to hold it.
//! The header is walked first ([`prescan`]) so that `gguf-rs` only ever sees one whose
//! lengths fit the file and whose tensor types ggml knows: it panics on some types and
//! allocates whatever length a string declares.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{ModelFileError, ModelRoots, origin};
use crate::domain::{Known, ModelFacts, one_line, shorten};

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
pub(super) fn read(files: &[PathBuf], roots: &ModelRoots) -> Result<ModelFacts, ModelFileError> {
    // Every part is checked before any is read: one link out of the roots refuses all.
    for file in files {
        roots.check(file)?;
    }
    let mut facts = ModelFacts {
        format: Some("gguf".to_owned()),
        ..ModelFacts::default()
    };
    let (mut bytes, mut params) = (0u64, 0u64);
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for (i, file) in files.iter().enumerate() {
        let (model, length) = decode(file, roots)?;
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
                ModelFileError::new(file, unknown_type(&tensor.name, tensor.kind))
            })?;
            bytes = bytes.saturating_add(size);
            params = params.saturating_add(elements);
            *by_type.entry(type_name(tensor.kind)).or_default() += size;
            end = end.max(tensor.offset.saturating_add(size));
        }
        let needed = model.data_offset().saturating_add(end);
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

/// One file's header decoded by `gguf-rs` once [`prescan`] passes, and the file's length.
fn decode(file: &Path, roots: &ModelRoots) -> Result<(gguf_rs::GGUFModel, u64), ModelFileError> {
    let not_gguf = |why: &str| {
        ModelFileError::new(
            file,
            format!("is not a GGUF file ({why}); pass a .gguf model"),
        )
    };
    let (handle, length) = super::open(roots, file)?;
    // Buffered: the header is read a few bytes at a time, a million reads for a
    // tokenizer's vocabulary otherwise.
    let mut reader = BufReader::with_capacity(1 << 20, handle);
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .map_err(|_| not_gguf("shorter than a header"))?;
    if &magic != b"GGUF" {
        return Err(not_gguf("no GGUF magic"));
    }
    prescan(&mut reader, length).map_err(|problem| ModelFileError::new(file, problem))?;
    reader
        .seek(SeekFrom::Start(4))
        .map_err(|e| super::cannot_read(file, &e))?;
    let mut container =
        gguf_rs::GGUFContainer::new(gguf_rs::ByteOrder::LE, Box::new(reader), MAX_ARRAY);
    let model = container.decode().map_err(|e| {
        ModelFileError::new(
            file,
            format!(
                "has a GGUF header AIMA cannot read ({}); the file may be truncated or damaged",
                shorten(&one_line(&e.to_string()), 200)
            ),
        )
    })?;
    Ok((model, length))
}

/// The one line for a tensor whose type is not in ggml's table as AIMA knows it.
fn unknown_type(tensor: &str, kind: u32) -> String {
    format!(
        "tensor '{}' has GGML type {kind}, which this AIMA does not know (a newer llama.cpp format?); use a model quantized to a known type, or a newer AIMA",
        shorten(&one_line(tensor), 80)
    )
}

/// Longest metadata key or tensor name read (ggml's own names stop at 64 bytes).
const MAX_NAME: u64 = 64 << 10;
/// Longest metadata string skipped (a tokenizer's JSON fits; a declared gigabyte not).
const MAX_STRING: u64 = 64 << 20;
/// Most tensors, metadata keys, or values in an array `gguf-rs` keeps whole (anything
/// but `tokenizer.*`, which it cuts to [`MAX_ARRAY`]).
const MAX_COUNT: u64 = 1 << 20;
/// Most values in a `tokenizer.*` array (vocabularies hold a few hundred thousand).
const MAX_TOKENIZER_COUNT: u64 = 1 << 24;

/// GGUF metadata value types that matter here (gguf.h's `gguf_type`).
const STRING: u32 = 8;
const ARRAY: u32 = 9;

/// What the header says when it ends before its own lengths do.
const CUT: &str = "has a GGUF header AIMA cannot read (the file ends inside it); the file may be truncated or damaged";

/// The file's header from just past the magic to the end of the tensor infos, walked
/// without keeping it: every declared length is checked against what is left of the file
/// (and bounded) before anything is skipped or allocated, and every tensor's type against
/// ggml's table. Returns the problem, in a line that quotes no bytes of the file but a
/// tensor's name and type.
fn prescan<R: Read + Seek>(reader: &mut BufReader<R>, length: u64) -> Result<(), String> {
    let mut header = Header {
        reader,
        at: 4,
        length,
    };
    match header.u32()? {
        2 | 3 => {}
        1 => {
            return Err(
                "is a GGUF version 1 file, which llama.cpp no longer reads; convert the model again"
                    .to_owned(),
            );
        }
        _ => {
            return Err(
                "has a GGUF version AIMA cannot read (it reads versions 2 and 3); the file may be damaged"
                    .to_owned(),
            );
        }
    }
    let tensors = header.u64()?;
    let keys = header.u64()?;
    if tensors > MAX_COUNT || keys > MAX_COUNT {
        return Err(format!(
            "has a GGUF header AIMA cannot read (it declares more than {MAX_COUNT} tensors or metadata keys); the file may be damaged"
        ));
    }
    for _ in 0..keys {
        let key = header.text()?;
        match header.u32()? {
            STRING => header.string()?,
            ARRAY => {
                let item = header.u32()?;
                let count = header.u64()?;
                let most = if key.starts_with("tokenizer.") {
                    MAX_TOKENIZER_COUNT
                } else {
                    MAX_COUNT
                };
                if count > most {
                    return Err(format!(
                        "has a GGUF header AIMA cannot read (metadata array {} declares more than {most} values); the file may be damaged",
                        shorten(&one_line(&key), 80)
                    ));
                }
                if item == STRING {
                    for _ in 0..count {
                        header.string()?;
                    }
                } else {
                    let size = scalar_size(item, &key)?;
                    header.skip(count.checked_mul(size).ok_or(CUT)?)?;
                }
            }
            kind => {
                let size = scalar_size(kind, &key)?;
                header.skip(size)?;
            }
        }
    }
    for _ in 0..tensors {
        let name = header.text()?;
        let dims = header.u32()?;
        if dims > 4 {
            return Err(format!(
                "has a GGUF header AIMA cannot read (tensor '{}' has more than ggml's 4 dimensions); the file may be damaged",
                shorten(&one_line(&name), 80)
            ));
        }
        header.skip(8 * u64::from(dims))?;
        let kind = header.u32()?;
        if stored_size(kind, 1).is_none() {
            return Err(unknown_type(&name, kind));
        }
        header.skip(8)?; // the tensor's offset in the data
    }
    Ok(())
}

/// Bytes of one metadata value of a fixed-size type; arrays of arrays and unknown types
/// are refused (llama.cpp reads neither).
fn scalar_size(kind: u32, key: &str) -> Result<u64, String> {
    match kind {
        0 | 1 | 7 => Ok(1), // u8, i8, bool
        2 | 3 => Ok(2),     // u16, i16
        4..=6 => Ok(4),     // u32, i32, f32
        10..=12 => Ok(8),   // u64, i64, f64
        _ => Err(format!(
            "has a GGUF header AIMA cannot read (metadata {} has a value type GGUF does not define); the file may be damaged",
            shorten(&one_line(key), 80)
        )),
    }
}

/// A cursor over a GGUF header that knows how much of the file is left.
struct Header<'a, R> {
    reader: &'a mut BufReader<R>,
    at: u64,
    length: u64,
}

impl<R: Read + Seek> Header<'_, R> {
    /// Claims `n` bytes, refusing them when the file ends first.
    fn claim(&mut self, n: u64) -> Result<(), String> {
        if self.length.saturating_sub(self.at) < n {
            return Err(CUT.to_owned());
        }
        self.at += n;
        Ok(())
    }

    fn read<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.claim(N as u64)?;
        let mut bytes = [0u8; N];
        self.reader
            .read_exact(&mut bytes)
            .map_err(|_| CUT.to_owned())?;
        Ok(bytes)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.read().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.read().map(u64::from_le_bytes)
    }

    /// Skips `n` bytes the file holds; within the buffer when they are there, so a
    /// vocabulary's strings cost no reads of their own.
    fn skip(&mut self, n: u64) -> Result<(), String> {
        self.claim(n)?;
        let n = i64::try_from(n).map_err(|_| CUT.to_owned())?;
        self.reader
            .seek_relative(n)
            .map_err(|e| format!("cannot be read: {e}"))
    }

    /// Skips a metadata string.
    fn string(&mut self) -> Result<(), String> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(format!(
                "has a GGUF header AIMA cannot read (a metadata string declares more than {} MiB); the file may be damaged",
                MAX_STRING >> 20
            ));
        }
        self.skip(n)
    }

    /// A key or a tensor name, its declared length checked before anything is allocated.
    fn text(&mut self) -> Result<String, String> {
        let n = self.u64()?;
        if n > MAX_NAME {
            return Err(format!(
                "has a GGUF header AIMA cannot read (a key or tensor name declares more than {} KiB); the file may be damaged",
                MAX_NAME >> 10
            ));
        }
        self.claim(n)?;
        let mut bytes = vec![0u8; usize::try_from(n).map_err(|_| CUT.to_owned())?];
        self.reader
            .read_exact(&mut bytes)
            .map_err(|_| CUT.to_owned())?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn push_text(out: &mut Vec<u8>, text: &str) {
        out.extend((text.len() as u64).to_le_bytes());
        out.extend(text.as_bytes());
    }

    /// A GGUF v3 file by hand: `general.architecture = llama`, a 4-value `tokenizer`
    /// string array, and one 1-D tensor of 32 values of GGML type `kind` (32 × 4 bytes of
    /// data, enough for F32).
    fn gguf(kind: u32) -> Vec<u8> {
        let mut out = header(kind);
        out.resize(out.len().div_ceil(32) * 32, 0);
        out.extend([0u8; 128]);
        out
    }

    /// [`gguf`] up to the end of its tensor infos.
    fn header(kind: u32) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(1u64.to_le_bytes()); // tensors
        out.extend(2u64.to_le_bytes()); // metadata keys
        push_text(&mut out, "general.architecture");
        out.extend(STRING.to_le_bytes());
        push_text(&mut out, "llama");
        push_text(&mut out, "tokenizer.ggml.tokens");
        out.extend(ARRAY.to_le_bytes());
        out.extend(STRING.to_le_bytes());
        out.extend(4u64.to_le_bytes());
        for token in ["a", "bb", "", "dddd"] {
            push_text(&mut out, token);
        }
        push_text(&mut out, "blk.0.attn_q.weight");
        out.extend(1u32.to_le_bytes());
        out.extend(32u64.to_le_bytes());
        out.extend(kind.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out
    }

    fn write(bytes: &[u8]) -> (tempfile::TempDir, PathBuf, ModelRoots) {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("m.gguf");
        std::fs::write(&file, bytes).expect("write");
        let roots = ModelRoots::new(&[dir.path().to_owned()]);
        (dir, file, roots)
    }

    fn scan(bytes: &[u8]) -> Result<(), String> {
        let mut reader = BufReader::new(std::io::Cursor::new(bytes.to_vec()));
        reader.seek(SeekFrom::Start(4)).expect("seek");
        prescan(&mut reader, bytes.len() as u64)
    }

    #[test]
    fn a_hand_written_file_reads() {
        let (_dir, file, roots) = write(&gguf(0));
        let facts = read(std::slice::from_ref(&file), &roots).expect("read");
        assert_eq!(facts.params.map(|p| p.value), Some(32));
        assert_eq!(facts.size_bytes.map(|s| s.value), Some(128));
        assert_eq!(
            facts.architecture.map(|a| a.value).as_deref(),
            Some("llama")
        );
    }

    /// Type 40 is `GGML_TYPE_COUNT`, on which `gguf-rs` hits `unreachable!()`; 41 and up
    /// are newer than ggml's table; 4 and 5 were removed. Read without `catch_unwind`, so
    /// a panic would fail the test.
    #[test]
    fn an_unknown_tensor_type_is_refused_before_gguf_rs_sees_it() {
        for kind in [4, 5, 31, 40, 41, 1000, u32::MAX] {
            let (_dir, file, roots) = write(&gguf(kind));
            let e = read(std::slice::from_ref(&file), &roots).expect_err("unknown type");
            assert_eq!(
                e.problem,
                format!(
                    "tensor 'blk.0.attn_q.weight' has GGML type {kind}, which this AIMA does not know (a newer llama.cpp format?); use a model quantized to a known type, or a newer AIMA"
                )
            );
        }
    }

    #[test]
    fn every_cut_of_the_header_is_refused_without_a_panic() {
        let whole = gguf(0);
        for cut in 4..header(0).len() {
            let problem = scan(&whole[..cut]).expect_err("cut");
            assert_eq!(problem, CUT, "cut at {cut}");
        }
        assert_eq!(scan(&whole), Ok(()));
    }

    #[test]
    fn declared_lengths_are_bounded_before_anything_is_allocated() {
        let base = {
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend(0u64.to_le_bytes());
            out.extend(1u64.to_le_bytes());
            out
        };
        // A key declaring an exabyte.
        let mut key = base.clone();
        key.extend((1u64 << 60).to_le_bytes());
        assert!(scan(&key).expect_err("key").contains("more than 64 KiB"));
        // A string value declaring a terabyte.
        let mut value = base.clone();
        push_text(&mut value, "general.name");
        value.extend(STRING.to_le_bytes());
        value.extend((1u64 << 40).to_le_bytes());
        assert!(
            scan(&value)
                .expect_err("string")
                .contains("more than 64 MiB")
        );
        // A string that would fit the bound but not the file.
        let mut short = base.clone();
        push_text(&mut short, "general.name");
        short.extend(STRING.to_le_bytes());
        short.extend(1000u64.to_le_bytes());
        assert_eq!(scan(&short), Err(CUT.to_owned()));
        // An array of u64 whose byte count overflows.
        let mut array = base.clone();
        push_text(&mut array, "tokenizer.ggml.scores");
        array.extend(ARRAY.to_le_bytes());
        array.extend(10u32.to_le_bytes());
        array.extend((1u64 << 24).to_le_bytes());
        assert_eq!(scan(&array), Err(CUT.to_owned()));
        // An array outside `tokenizer.*` that gguf-rs would keep whole.
        let mut kept = base.clone();
        push_text(&mut kept, "llama.huge");
        kept.extend(ARRAY.to_le_bytes());
        kept.extend(0u32.to_le_bytes());
        kept.extend((MAX_COUNT + 1).to_le_bytes());
        assert!(
            scan(&kept)
                .expect_err("array")
                .contains("metadata array llama.huge")
        );
        // Nested arrays and undefined value types.
        let mut nested = base.clone();
        push_text(&mut nested, "x");
        nested.extend(ARRAY.to_le_bytes());
        nested.extend(ARRAY.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
        assert!(scan(&nested).expect_err("nested").contains("value type"));
        // Counts no model has.
        let mut counts = b"GGUF".to_vec();
        counts.extend(3u32.to_le_bytes());
        counts.extend(u64::MAX.to_le_bytes());
        counts.extend(0u64.to_le_bytes());
        assert!(
            scan(&counts)
                .expect_err("counts")
                .contains("more than 1048576 tensors")
        );
    }

    #[test]
    fn versions_other_than_2_and_3_are_refused_without_their_bytes() {
        for version in [0u32, 4, 0x6c6c_6568] {
            let mut bytes = gguf(0);
            bytes[4..8].copy_from_slice(&version.to_le_bytes());
            let problem = scan(&bytes).expect_err("version");
            assert!(problem.contains("GGUF version"), "{problem}");
            assert!(!problem.contains(&version.to_string()), "{problem}");
        }
        let mut bytes = gguf(0);
        bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert!(scan(&bytes).expect_err("v1").contains("version 1 file"));
    }

    #[test]
    fn a_tensor_with_more_than_four_dimensions_is_refused() {
        let mut bytes = gguf(0);
        let name = b"blk.0.attn_q.weight";
        let at = bytes
            .windows(name.len())
            .position(|w| w == name)
            .expect("tensor name")
            + name.len();
        bytes[at..at + 4].copy_from_slice(&5u32.to_le_bytes());
        assert!(
            scan(&bytes)
                .expect_err("dims")
                .contains("more than ggml's 4 dimensions")
        );
    }
}
