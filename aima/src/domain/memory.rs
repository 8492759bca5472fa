//! What a model needs in GPU memory, before anything starts: the facts read from its files
//! (or stated by the operator), each with where it came from, and the estimate for one
//! engine: weights + KV cache + the engine's own overhead.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// A number AIMA knows about a model, and where it came from (`model.gguf:
/// llama.block_count`, `config.json: num_key_value_heads`, `--size`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known<T> {
    pub value: T,
    pub from: String,
}

impl<T> Known<T> {
    pub fn new(value: T, from: impl Into<String>) -> Self {
        Self {
            value,
            from: from.into(),
        }
    }
}

/// What AIMA read from a model's files, or was told by the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFacts {
    /// `gguf` or `safetensors`; none for a model AIMA could not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<Known<String>>,
    /// Bytes of the weights as stored (what loading them takes on the GPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<Known<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Known<u64>>,
    /// `BF16`, `Q4_K`, `awq`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Known<String>>,
    /// The longest context the model was trained for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<Known<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Known<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_heads: Option<Known<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_heads: Option<Known<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<Known<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<Known<u32>>,
    /// GPU memory a running engine of this model really held on this host, by engine
    /// (NVML's per-process accounting), next to the estimate.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub measured: BTreeMap<String, Known<u64>>,
    /// Host memory a running engine of this model held on this host when it ran on the
    /// CPU, by engine (its container's cgroup).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub measured_ram: BTreeMap<String, Known<u64>>,
}

impl ModelFacts {
    /// Bytes an engine of this model was measured to hold on this host.
    pub fn measured_on(&self, engine: &str) -> Option<u64> {
        self.measured.get(engine).map(|k| k.value)
    }

    /// Bytes of host memory an engine of this model was measured to hold on the CPU.
    pub fn measured_in_ram(&self, engine: &str) -> Option<u64> {
        self.measured_ram.get(engine).map(|k| k.value)
    }

    /// Bytes of KV cache per token of context: 2 (keys and values) × layers × KV heads ×
    /// head size × bytes per element. None when the shape is not known.
    pub fn kv_bytes_per_token(&self, bytes_per_element: u64) -> Option<u64> {
        let layers = u64::from(self.layers.as_ref()?.value);
        let kv_heads = self
            .kv_heads
            .as_ref()
            .or(self.attention_heads.as_ref())
            .map(|k| u64::from(k.value))?;
        let head_dim = match &self.head_dim {
            Some(d) => u64::from(d.value),
            None => {
                let heads = u64::from(self.attention_heads.as_ref()?.value);
                u64::from(self.embedding_size.as_ref()?.value).checked_div(heads)?
            }
        };
        2u64.checked_mul(layers)?
            .checked_mul(kv_heads)?
            .checked_mul(head_dim)?
            .checked_mul(bytes_per_element)
    }
}

/// What an engine needs besides weights and KV cache, as catalog data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineMemory {
    /// CUDA context, graphs, activations and buffers, in bytes.
    pub overhead_bytes: u64,
    /// What the overhead stands for, as an assumption the estimate states.
    pub overhead: &'static str,
    /// Sequences the engine holds a full context for, by default.
    pub sequences: u32,
    /// Bytes per element of the KV cache (16-bit by default in every engine here).
    pub kv_bytes_per_element: u64,
}

impl EngineMemory {
    /// vLLM and SGLang: they profile a batch and capture CUDA graphs before sizing the
    /// KV cache.
    pub const PYTHON_ENGINE: Self = Self {
        overhead_bytes: 2 * GIB,
        overhead: "CUDA context ~0.5 GiB, CUDA graphs ~0.5 GiB, peak activations of the profiling batch ~1 GiB",
        sequences: 1,
        kv_bytes_per_element: 2,
    };
    /// llama.cpp's server: a CUDA context and compute buffers for the default batch.
    pub const LLAMA_CPP: Self = Self {
        overhead_bytes: 768 * MIB,
        overhead: "CUDA context ~0.3 GiB, compute buffers for a batch of 512 ~0.45 GiB",
        sequences: 1,
        kv_bytes_per_element: 2,
    };
    /// Ollama runs llama.cpp's runner behind its own server.
    pub const OLLAMA: Self = Self {
        overhead_bytes: GIB,
        overhead: "CUDA context ~0.3 GiB, compute buffers ~0.45 GiB, Ollama's runner ~0.25 GiB",
        sequences: 1,
        kv_bytes_per_element: 2,
    };
}

/// Context assumed when neither the model nor the operator says.
pub const DEFAULT_CONTEXT: u32 = 4096;

/// GPU memory a model needs on one engine, with its parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub kv_cache: u64,
    pub overhead: u64,
    pub total: u64,
    /// Tokens of context the KV cache is sized for.
    pub context_length: u32,
    /// Sequences of that context held at once.
    pub sequences: u32,
    /// What the numbers take for granted, for people to judge them.
    pub assumptions: Vec<String>,
}

/// The estimate for `facts` on an engine; None when the weights' size is unknown (then
/// nothing honest can be said). `context` overrides the model's own.
pub fn estimate(
    facts: &ModelFacts,
    engine: &EngineMemory,
    context: Option<u32>,
) -> Option<MemoryEstimate> {
    let weights = facts.size_bytes.as_ref()?.value;
    let mut assumptions = Vec::new();
    let context_length = match (context, &facts.context_length) {
        (Some(c), _) => c,
        (None, Some(c)) => c.value,
        (None, None) => {
            assumptions.push(format!(
                "context of {DEFAULT_CONTEXT} tokens: the model's is unknown (state it with --context)"
            ));
            DEFAULT_CONTEXT
        }
    };
    let kv_cache = match facts.kv_bytes_per_token(engine.kv_bytes_per_element) {
        Some(per_token) => {
            if facts.kv_heads.is_none() {
                assumptions.push(
                    "as many KV heads as attention heads: the model states no KV heads".to_owned(),
                );
            }
            assumptions.push(format!(
                "KV cache of {} KiB per token ({}-bit) for {context_length} tokens × {} sequence(s)",
                per_token / 1024,
                engine.kv_bytes_per_element * 8,
                engine.sequences
            ));
            per_token
                .saturating_mul(u64::from(context_length))
                .saturating_mul(u64::from(engine.sequences))
        }
        None => {
            assumptions
                .push("no KV cache counted: the model's layers and heads are unknown".to_owned());
            0
        }
    };
    assumptions.push(format!("engine overhead: {}", engine.overhead));
    Some(MemoryEstimate {
        weights,
        kv_cache,
        overhead: engine.overhead_bytes,
        total: weights
            .saturating_add(kv_cache)
            .saturating_add(engine.overhead_bytes),
        context_length,
        sequences: engine.sequences,
        assumptions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Llama 3 8B as its model card and config.json state it.
    fn llama3_8b() -> ModelFacts {
        ModelFacts {
            size_bytes: Some(Known::new(16_060_522_496, "test")),
            context_length: Some(Known::new(8192, "test")),
            layers: Some(Known::new(32, "test")),
            attention_heads: Some(Known::new(32, "test")),
            kv_heads: Some(Known::new(8, "test")),
            embedding_size: Some(Known::new(4096, "test")),
            ..ModelFacts::default()
        }
    }

    #[test]
    fn llama3_8b_needs_128_kib_of_kv_cache_per_token_in_16_bit() {
        // 2 × 32 layers × 8 KV heads × 128 (4096 / 32) × 2 bytes = 131072.
        assert_eq!(llama3_8b().kv_bytes_per_token(2), Some(128 * 1024));
    }

    #[test]
    fn an_estimate_adds_weights_kv_cache_for_the_context_and_the_engines_overhead() {
        let e = estimate(&llama3_8b(), &EngineMemory::PYTHON_ENGINE, None).expect("estimate");
        assert_eq!(e.kv_cache, 128 * 1024 * 8192); // 1 GiB for one 8192-token sequence
        assert_eq!(e.total, 16_060_522_496 + (1 << 30) + 2 * (1 << 30));
        let shorter =
            estimate(&llama3_8b(), &EngineMemory::PYTHON_ENGINE, Some(2048)).expect("estimate");
        assert_eq!(shorter.kv_cache, 128 * 1024 * 2048);
    }

    #[test]
    fn without_a_size_there_is_no_estimate_and_without_a_shape_no_kv_cache() {
        let mut facts = llama3_8b();
        facts.layers = None;
        let e = estimate(&facts, &EngineMemory::LLAMA_CPP, None).expect("estimate");
        assert_eq!(e.kv_cache, 0);
        assert!(
            e.assumptions
                .iter()
                .any(|a| a.contains("no KV cache counted"))
        );
        facts.size_bytes = None;
        assert_eq!(estimate(&facts, &EngineMemory::LLAMA_CPP, None), None);
    }
}
