//! Pure rules: models, ids and validation. No I/O, no async runtime.

mod id;
mod model;

pub use id::random_hex8;
pub use model::{Model, ModelId, ModelSource, ModelSpec, ModelStatus, NAME_MAX_CHARS};

/// Input that breaks a domain rule. `field` is the JSON field / CLI flag at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}
