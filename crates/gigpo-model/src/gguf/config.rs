//! The decoder configuration from a GGUF file's `{arch}.*` metadata and tensor list.

use serde_json::json;

use super::file::{gguf_err, GgufFile};
use crate::config::{Architecture, ModelConfig};
use crate::error::Result;
use crate::lora::TargetModule;
use crate::weights::Role;

impl GgufFile {
    /// The decoder configuration from the `{arch}.*` metadata and the tensor list.
    pub fn model_config(&self) -> Result<ModelConfig> {
        let u = |k: &str| self.uint(&self.key(k));
        let hidden_size = u("embedding_length")?;
        let num_heads = u("attention.head_count")?;
        if num_heads == 0 || hidden_size % num_heads != 0 {
            return Err(self.field_err(
                &self.key("attention.head_count"),
                format!("{num_heads} does not divide embedding_length {hidden_size}"),
            ));
        }
        let num_kv_heads = self
            .opt_uint(&self.key("attention.head_count_kv"))?
            .unwrap_or(num_heads);
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(self.field_err(
                &self.key("attention.head_count_kv"),
                format!("{num_kv_heads} does not divide head_count {num_heads}"),
            ));
        }
        let head_dim = self.head_dim(hidden_size / num_heads)?;
        self.check_rope(head_dim)?;
        let embed = self.tensor_dims(&Role::Embedding.gguf_name())?;
        let qwen = self.arch == Architecture::Qwen2;
        let has_bias = |proj| self.has_tensor(&Role::Bias { layer: 0, proj }.gguf_name());
        let attn_bias = has_bias(TargetModule::QProj);
        Ok(ModelConfig {
            architecture: self.arch,
            vocab_size: embed[0],
            hidden_size,
            intermediate_size: u("feed_forward_length")?,
            num_layers: u("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rope_theta: self
                .opt_float(&self.key("rope.freq_base"))?
                .unwrap_or(10_000.0),
            rope_scaling: None,
            rms_norm_eps: self
                .opt_float(&self.key("attention.layer_norm_rms_epsilon"))?
                .ok_or_else(|| {
                    self.field_err(&self.key("attention.layer_norm_rms_epsilon"), "missing")
                })?,
            max_position_embeddings: u("context_length")?,
            tie_word_embeddings: !self.has_tensor(&Role::LmHead.gguf_name()),
            qkv_bias: qwen || attn_bias,
            o_bias: !qwen && attn_bias,
            mlp_bias: !qwen && has_bias(TargetModule::UpProj),
        })
    }

    fn head_dim(&self, default: usize) -> Result<usize> {
        let key = self.key("attention.key_length");
        let head_dim = self.opt_uint(&key)?.unwrap_or(default);
        if let Some(v) = self.opt_uint(&self.key("attention.value_length"))? {
            if v != head_dim {
                return Err(self.field_err(
                    &self.key("attention.value_length"),
                    format!("{v} differs from the key length {head_dim} (unsupported)"),
                ));
            }
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(self.field_err(&key, format!("head width {head_dim} must be even")));
        }
        Ok(head_dim)
    }

    /// Only the plain rotary embedding over whole heads is supported.
    fn check_rope(&self, head_dim: usize) -> Result<()> {
        let dims_key = self.key("rope.dimension_count");
        if let Some(d) = self.opt_uint(&dims_key)? {
            if d != head_dim {
                return Err(self.field_err(
                    &dims_key,
                    format!("partial rotary embedding ({d} of {head_dim}) unsupported"),
                ));
            }
        }
        let scaling_key = self.key("rope.scaling.type");
        if let Some(kind) = self.opt_string(&scaling_key)? {
            if kind != "none" {
                return Err(self.field_err(&scaling_key, format!("{kind:?} unsupported")));
            }
        }
        if self.has_tensor("rope_freqs.weight") {
            return Err(gguf_err(
                &self.path,
                "tensor rope_freqs.weight (Llama 3 rope scaling) unsupported",
            ));
        }
        Ok(())
    }

    /// The `config.json` object of the converted model (with BOS/EOS/padding ids).
    pub fn hf_config(&self, cfg: &ModelConfig) -> Result<serde_json::Value> {
        let mut v = cfg.to_hf_json("float32");
        for (field, key) in [
            ("bos_token_id", "tokenizer.ggml.bos_token_id"),
            ("eos_token_id", "tokenizer.ggml.eos_token_id"),
            ("pad_token_id", "tokenizer.ggml.padding_token_id"),
        ] {
            if let Some(id) = self.opt_uint(key)? {
                v[field] = json!(id);
            }
        }
        Ok(v)
    }
}
