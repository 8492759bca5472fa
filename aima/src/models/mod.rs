//! Model files, read without loading them: GGUF metadata and tensor infos, safetensors
//! headers (sharded or not) and a Hugging Face `config.json`, turned into the facts a
//! memory estimate needs, each with the file and key it came from. Only headers are
//! read, so a 16 GB model is inspected in milliseconds. Every file is checked against the
//! model roots before it is opened ([`ModelRoots`]), so a link inside a model cannot make
//! AIMA read a file elsewhere on the host; and no error quotes a file's bytes.

mod gguf;
mod hf_config;
pub mod hub;
mod safetensors;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::domain::{ModelFacts, one_line};

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

/// The directories every model file must resolve under (`AIMA_MODEL_ROOTS`), each
/// resolved once. A link is fine while its target stays under a root (Hugging Face's
/// cache links a snapshot's files to blobs in the same cache); one that leaves them is
/// refused before the file is opened.
#[derive(Debug, Clone)]
pub struct ModelRoots {
    /// The roots as configured, `:`-separated, for messages.
    listed: String,
    /// The roots with every symlink resolved; a root that does not exist holds nothing.
    resolved: Vec<PathBuf>,
}

impl ModelRoots {
    pub fn new(roots: &[PathBuf]) -> Self {
        Self {
            listed: roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
            resolved: roots
                .iter()
                .filter_map(|root| std::fs::canonicalize(root).ok())
                .collect(),
        }
    }

    /// `file` with every symlink resolved, if that lies under a root; nothing is opened.
    pub fn check(&self, file: &Path) -> Result<PathBuf, ModelFileError> {
        let resolved = std::fs::canonicalize(file).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ModelFileError::new(
                    file,
                    "does not exist (or is a link to a file that does not); download the model again",
                )
            } else {
                cannot_read(file, &e)
            }
        })?;
        if self.resolved.iter().any(|root| resolved.starts_with(root)) {
            return Ok(resolved);
        }
        Err(ModelFileError::new(
            file,
            format!(
                "resolves to {}, outside the model roots ({}); copy the file under a root or add its directory to AIMA_MODEL_ROOTS",
                one_line(&resolved.display().to_string()),
                self.listed
            ),
        ))
    }
}

/// `file` opened once [`ModelRoots::check`] passes and it is a regular file (a FIFO or
/// a device would block or never end), with its length.
fn open(roots: &ModelRoots, file: &Path) -> Result<(std::fs::File, u64), ModelFileError> {
    let resolved = roots.check(file)?;
    match std::fs::metadata(&resolved) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(ModelFileError::new(file, "is not a regular file")),
        Err(e) => return Err(cannot_read(file, &e)),
    }
    let handle = std::fs::File::open(&resolved).map_err(|e| cannot_read(file, &e))?;
    let length = handle.metadata().map_err(|e| cannot_read(file, &e))?.len();
    Ok((handle, length))
}

/// Largest JSON file read (an index or `config.json`; a big model's index is a few MB).
const MAX_JSON: u64 = 64 << 20;

/// A JSON file (a safetensors index, `config.json`), opened through [`open`].
fn read_json(roots: &ModelRoots, file: &Path) -> Result<serde_json::Value, ModelFileError> {
    let (handle, length) = open(roots, file)?;
    if length > MAX_JSON {
        return Err(ModelFileError::new(
            file,
            format!(
                "is larger than the {} MiB AIMA reads of a JSON file; is it the right file?",
                MAX_JSON >> 20
            ),
        ));
    }
    let mut text = Vec::new();
    handle
        .take(MAX_JSON)
        .read_to_end(&mut text)
        .map_err(|e| cannot_read(file, &e))?;
    serde_json::from_slice(&text)
        .map_err(|e| ModelFileError::new(file, format!("is not valid JSON ({})", json_where(&e))))
}

/// Where a JSON error is, never what the text there says (it may be anything).
fn json_where(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Eof => "it ends early".to_owned(),
        serde_json::error::Category::Io => "it cannot be read".to_owned(),
        serde_json::error::Category::Syntax => {
            format!("line {}, column {}", e.line(), e.column())
        }
        serde_json::error::Category::Data => format!(
            "unexpected content at line {}, column {}",
            e.line(),
            e.column()
        ),
    }
}

fn cannot_read(file: &Path, e: &std::io::Error) -> ModelFileError {
    ModelFileError::new(file, format!("cannot be read: {e}"))
}

/// The facts of the model at `path`: a `.gguf` or `.safetensors` file, or a directory
/// holding one GGUF model (split files too) or a Hugging Face layout (`config.json`
/// with `*.safetensors`, sharded with `model.safetensors.index.json`). Every file read
/// must resolve under `roots`.
pub fn inspect(path: &Path, roots: &ModelRoots) -> Result<ModelFacts, ModelFileError> {
    // A reader bug must not take the daemon down with a caller's file.
    std::panic::catch_unwind(|| inspect_path(path, roots)).unwrap_or_else(|_| {
        Err(ModelFileError::new(
            path,
            "could not be read (the reader failed on it); check that it is a complete model file",
        ))
    })
}

fn inspect_path(path: &Path, roots: &ModelRoots) -> Result<ModelFacts, ModelFileError> {
    roots.check(path)?;
    if path.is_file() {
        return match extension(path).as_deref() {
            Some("gguf") => gguf::read(&[path.to_owned()], roots),
            Some("safetensors") => {
                let mut facts = safetensors::read(&[path.to_owned()], roots)?;
                if let Some(dir) = path.parent() {
                    hf_config::add(dir, roots, &mut facts)?;
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
        let shards = safetensors::shards(index, roots)?;
        let mut facts = safetensors::read(&shards, roots)?;
        hf_config::add(path, roots, &mut facts)?;
        return Ok(facts);
    }
    let tensors = of("safetensors");
    if !tensors.is_empty() {
        let mut facts = safetensors::read(&tensors, roots)?;
        hf_config::add(path, roots, &mut facts)?;
        return Ok(facts);
    }
    let ggufs = of("gguf");
    match ggufs.as_slice() {
        [] => Err(ModelFileError::new(
            path,
            "holds no model files (.gguf, or .safetensors with config.json); pass the directory or file of the weights",
        )),
        [one] => gguf::read(std::slice::from_ref(one), roots),
        several => {
            // `name-00001-of-00003.gguf`: one model split in parts; anything else is
            // several models, and which one is meant is the operator's to say.
            if several.iter().all(|f| gguf::is_split_part(f)) {
                gguf::read(several, roots)
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A root (`models`) and a directory beside it that is not one (`elsewhere`).
    fn layout() -> (tempfile::TempDir, PathBuf, PathBuf, ModelRoots) {
        let home = tempfile::tempdir().expect("temp dir");
        let root = home.path().join("models");
        let elsewhere = home.path().join("elsewhere");
        std::fs::create_dir_all(&root).expect("root");
        std::fs::create_dir_all(&elsewhere).expect("elsewhere");
        let roots = ModelRoots::new(std::slice::from_ref(&root));
        (home, root, elsewhere, roots)
    }

    /// A FIFO: opening it for reading would block until a writer comes, which none does.
    fn fifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    }

    fn tiny_safetensors(file: &Path) {
        let data = [0u8; 32];
        let view =
            ::safetensors::tensor::TensorView::new(::safetensors::Dtype::F16, vec![4, 4], &data)
                .expect("tensor view");
        ::safetensors::tensor::serialize_to_file([("w", view)], None, file)
            .expect("write safetensors");
    }

    fn sharded(dir: &Path) {
        std::fs::create_dir_all(dir).expect("model dir");
        tiny_safetensors(&dir.join("model-00001-of-00002.safetensors"));
        tiny_safetensors(&dir.join("model-00002-of-00002.safetensors"));
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#,
        )
        .expect("index");
    }

    #[test]
    fn a_file_under_a_root_or_linked_within_one_passes() {
        let (_home, root, _, roots) = layout();
        let file = root.join("blob");
        std::fs::write(&file, b"x").expect("write");
        let resolved = std::fs::canonicalize(&file).expect("resolve");
        assert_eq!(roots.check(&file), Ok(resolved.clone()));
        // Hugging Face's cache: a snapshot's file is a link to a blob in the same root.
        std::fs::create_dir_all(root.join("snapshots")).expect("dir");
        let link = root.join("snapshots").join("model.safetensors");
        symlink("../blob", &link).expect("link");
        assert_eq!(roots.check(&link), Ok(resolved));
    }

    #[test]
    fn a_root_that_is_itself_a_link_holds_what_lies_under_its_target() {
        let (home, root, _, _) = layout();
        let alias = home.path().join("alias");
        symlink(&root, &alias).expect("link the root");
        let roots = ModelRoots::new(std::slice::from_ref(&alias));
        let file = root.join("m.gguf");
        std::fs::write(&file, b"x").expect("write");
        assert!(roots.check(&file).is_ok());
        assert!(roots.check(&alias.join("m.gguf")).is_ok());
    }

    #[test]
    fn a_link_out_of_the_roots_is_refused_naming_the_file_its_target_and_the_fix() {
        let (_home, root, elsewhere, roots) = layout();
        let target = elsewhere.join("secret");
        std::fs::write(&target, b"x").expect("write");
        let link = root.join("model-00002-of-00002.safetensors");
        symlink(&target, &link).expect("link");
        let e = roots.check(&link).expect_err("outside");
        assert_eq!(e.file, link);
        let line = e.to_string();
        let target = std::fs::canonicalize(&target).expect("resolve");
        for needed in [
            "model-00002-of-00002.safetensors: resolves to ",
            target.to_str().expect("utf-8"),
            "outside the model roots (",
            root.to_str().expect("utf-8"),
            "add its directory to AIMA_MODEL_ROOTS",
        ] {
            assert!(line.contains(needed), "{needed:?} in {line}");
        }
        assert_eq!(line.lines().count(), 1);
        // `..` out of a root is the same as a link out of it.
        let dotted = root.join("..").join("elsewhere").join("secret");
        assert!(roots.check(&dotted).is_err());
        // No roots at all (none exists): nothing passes.
        let none = ModelRoots::new(&[root.join("missing")]);
        let inside = root.join("inside");
        std::fs::write(&inside, b"x").expect("write");
        assert!(none.check(&inside).is_err());
    }

    #[test]
    fn a_dangling_link_says_its_file_is_missing() {
        let (_home, root, _, roots) = layout();
        let link = root.join("config.json");
        symlink(root.join("gone"), &link).expect("link");
        let e = roots.check(&link).expect_err("dangling");
        assert!(e.problem.starts_with("does not exist"), "{e}");
    }

    /// Each file a model reads is checked before it is opened: the outside targets are
    /// FIFOs, which would block the read (or be refused as "not a regular file") if the
    /// check came after the open or the stat.
    #[test]
    fn every_file_of_a_model_is_held_to_the_roots_before_it_is_opened() {
        let (_home, root, elsewhere, roots) = layout();

        // A shard of a sharded safetensors model.
        let model = root.join("sharded");
        sharded(&model);
        let shard = model.join("model-00002-of-00002.safetensors");
        std::fs::remove_file(&shard).expect("remove");
        fifo(&elsewhere.join("shard"));
        symlink(elsewhere.join("shard"), &shard).expect("link");
        let e = inspect(&model, &roots).expect_err("shard outside");
        assert_eq!(e.file, shard, "{e}");
        assert!(e.problem.contains("outside the model roots"), "{e}");

        // The index itself.
        let model = root.join("index-out");
        sharded(&model);
        let index = model.join("model.safetensors.index.json");
        std::fs::rename(&index, elsewhere.join("index.json")).expect("move");
        symlink(elsewhere.join("index.json"), &index).expect("link");
        let e = inspect(&model, &roots).expect_err("index outside");
        assert_eq!(e.file, index, "{e}");

        // config.json: it was read with no check at all, and a FIFO hung the reader.
        let model = root.join("config-out");
        std::fs::create_dir_all(&model).expect("dir");
        tiny_safetensors(&model.join("model.safetensors"));
        fifo(&elsewhere.join("config"));
        symlink(elsewhere.join("config"), model.join("config.json")).expect("link");
        let e = inspect(&model, &roots).expect_err("config outside");
        assert_eq!(e.file, model.join("config.json"), "{e}");
        assert!(e.problem.contains("outside the model roots"), "{e}");

        // A GGUF file passed directly, and one found in a directory.
        fifo(&elsewhere.join("gguf"));
        let gguf = root.join("single.gguf");
        symlink(elsewhere.join("gguf"), &gguf).expect("link");
        let e = inspect(&gguf, &roots).expect_err("gguf outside");
        assert!(e.problem.contains("outside the model roots"), "{e}");
        // A regular file outside (stat sees a file, so the directory lists it).
        std::fs::write(elsewhere.join("plain.gguf"), b"GGUF").expect("write");
        std::fs::create_dir_all(root.join("dir")).expect("dir");
        symlink(
            elsewhere.join("plain.gguf"),
            root.join("dir").join("m.gguf"),
        )
        .expect("link");
        let e = inspect(&root.join("dir"), &roots).expect_err("gguf outside");
        assert!(e.problem.contains("outside the model roots"), "{e}");

        // The model path itself.
        let e = inspect(&elsewhere, &roots).expect_err("path outside");
        assert!(e.problem.contains("outside the model roots"), "{e}");
    }

    #[test]
    fn a_config_json_inside_the_roots_that_is_a_fifo_is_not_read() {
        let (_home, root, _, roots) = layout();
        let model = root.join("m");
        std::fs::create_dir_all(&model).expect("dir");
        tiny_safetensors(&model.join("model.safetensors"));
        fifo(&model.join("config.json"));
        let e = inspect(&model, &roots).expect_err("fifo");
        assert_eq!(e.problem, "is not a regular file");
    }

    #[test]
    fn a_link_within_the_roots_is_read() {
        let (_home, root, _, roots) = layout();
        let blobs = root.join("blobs");
        sharded(&blobs);
        let snapshot = root.join("snapshot");
        std::fs::create_dir_all(&snapshot).expect("dir");
        for name in [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
        ] {
            symlink(blobs.join(name), snapshot.join(name)).expect("link");
        }
        let facts = inspect(&snapshot, &roots).expect("read through links");
        assert_eq!(facts.params.map(|p| p.value), Some(32));
    }

    /// A text file named `.safetensors`: its first 8 bytes read as a header length are a
    /// meaningless number, and neither it nor the text reaches the message.
    #[test]
    fn a_text_file_is_not_a_safetensors_file_and_its_bytes_are_not_quoted() {
        let (_home, root, _, roots) = layout();
        let text = b"hello world, this is text";
        let file = root.join("model.safetensors");
        std::fs::write(&file, text).expect("write");
        let e = inspect(&file, &roots).expect_err("text");
        let line = e.to_string();
        assert!(
            line.contains(
                "model.safetensors: is not a safetensors file (its header length is implausible)"
            ),
            "{line}"
        );
        let as_number = u64::from_le_bytes(text[..8].try_into().expect("8 bytes"));
        assert!(!line.contains(&as_number.to_string()), "{line}");
        assert!(!line.contains(&format!("{} bytes", text.len())), "{line}");
        assert!(!line.contains("hello"), "{line}");
        // A header JSON that is not one: where, never what.
        std::fs::write(
            &file,
            [&16u64.to_le_bytes()[..], b"{\"secret\": true}"].concat(),
        )
        .expect("write");
        let line = inspect(&file, &roots).expect_err("json").to_string();
        assert!(
            line.contains("has a safetensors header AIMA cannot read"),
            "{line}"
        );
        assert!(!line.contains("secret"), "{line}");
    }
}
