//! Model configuration: the Hugging Face `config.json` fields this crate reads, and the tiny model.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The decoder architectures this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// `Qwen2ForCausalLM` (Qwen2 and Qwen2.5): bias on the q/k/v projections.
    Qwen2,
    /// `LlamaForCausalLM`: no projection biases unless `attention_bias` is set.
    Llama,
}

impl Architecture {
    /// The `model_type` string of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "qwen2",
            Architecture::Llama => "llama",
        }
    }

    /// The `architectures[0]` string of `config.json`.
    pub fn class_name(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Llama => "LlamaForCausalLM",
        }
    }
}

/// Llama 3 style frequency scaling of the rotary embedding (`rope_scaling.rope_type = "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    /// `factor`.
    pub factor: f64,
    /// `low_freq_factor`.
    pub low_freq_factor: f64,
    /// `high_freq_factor`.
    pub high_freq_factor: f64,
    /// `original_max_position_embeddings`.
    pub original_max_position_embeddings: usize,
}

/// The shape of a decoder: what the forward pass needs to know.
///
/// Built from a Hugging Face `config.json` by [`ModelConfig::from_hf_json`], or from a
/// [`TinyConfig`] by [`TinyConfig::model_config`].
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Which architecture's weight names and biases apply.
    pub architecture: Architecture,
    /// Vocabulary size (rows of the embedding matrix).
    pub vocab_size: usize,
    /// Model width d.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention when smaller than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Base θ of the rotary embedding.
    pub rope_theta: f64,
    /// Optional Llama 3 rotary scaling.
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// ε of the RMS norms.
    pub rms_norm_eps: f64,
    /// Longest sequence (prompt + response) the model accepts.
    pub max_position_embeddings: usize,
    /// Whether the output projection shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Bias on the q/k/v projections (Qwen2: always; Llama: `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama `attention_bias`).
    pub o_bias: bool,
    /// Bias on the MLP projections (Llama `mlp_bias`).
    pub mlp_bias: bool,
}

#[derive(Deserialize)]
struct HfConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    /// transformers ≥ 5 keeps θ and the scaling here.
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    hidden_act: Option<String>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    4096
}

impl ModelConfig {
    /// Parses the text of a Hugging Face `config.json`; `path` is used in error messages only.
    pub fn from_hf_json(text: &str, path: &Path) -> Result<Self> {
        let hf: HfConfig = serde_json::from_str(text).map_err(|e| ModelError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let architecture = parse_architecture(&hf)?;
        if let Some(act) = &hf.hidden_act {
            if act != "silu" {
                return Err(ModelError::config(
                    "hidden_act",
                    format!("{act:?} unsupported, only \"silu\""),
                ));
            }
        }
        if hf.num_attention_heads == 0
            || hf.hidden_size % hf.num_attention_heads != 0 && hf.head_dim.is_none()
        {
            return Err(ModelError::config(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    hf.num_attention_heads, hf.hidden_size
                ),
            ));
        }
        let num_kv_heads = hf.num_key_value_heads.unwrap_or(hf.num_attention_heads);
        if num_kv_heads == 0 || hf.num_attention_heads % num_kv_heads != 0 {
            return Err(ModelError::config(
                "num_key_value_heads",
                format!(
                    "{num_kv_heads} does not divide num_attention_heads {}",
                    hf.num_attention_heads
                ),
            ));
        }
        let head_dim = hf
            .head_dim
            .unwrap_or(hf.hidden_size / hf.num_attention_heads);
        if head_dim % 2 != 0 {
            return Err(ModelError::config(
                "head_dim",
                format!("{head_dim} must be even"),
            ));
        }
        let params = hf.rope_parameters.as_ref();
        let rope_theta = hf
            .rope_theta
            .or_else(|| {
                params
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(|t| t.as_f64())
            })
            .unwrap_or(10_000.0);
        let rope_scaling = parse_rope_scaling(hf.rope_scaling.as_ref().or(params))?;
        let qwen = architecture == Architecture::Qwen2;
        let cfg = ModelConfig {
            architecture,
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            num_kv_heads,
            head_dim,
            rope_theta,
            rope_scaling,
            rms_norm_eps: hf.rms_norm_eps,
            max_position_embeddings: hf.max_position_embeddings,
            tie_word_embeddings: hf.tie_word_embeddings,
            qkv_bias: qwen || hf.attention_bias,
            o_bias: !qwen && hf.attention_bias,
            mlp_bias: !qwen && hf.mlp_bias,
        };
        cfg.validate().map_err(|e| in_file(e, path))?;
        Ok(cfg)
    }

    /// A `config.json` object for this configuration, as transformers writes it.
    pub fn to_hf_json(&self, torch_dtype: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "architectures": [self.architecture.class_name()],
            "model_type": self.architecture.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": torch_dtype,
            "use_cache": true,
        });
        if self.architecture == Architecture::Llama {
            v["attention_bias"] = serde_json::json!(self.qkv_bias);
            v["mlp_bias"] = serde_json::json!(self.mlp_bias);
        } else {
            v["use_sliding_window"] = serde_json::json!(false);
        }
        if let Some(s) = &self.rope_scaling {
            v["rope_scaling"] = serde_json::json!({
                "rope_type": "llama3",
                "factor": s.factor,
                "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
            });
        }
        v
    }
}

/// Puts the file's path in front of the field of a configuration error.
fn in_file(e: ModelError, path: &Path) -> ModelError {
    match e {
        ModelError::Config { field, message } => {
            ModelError::config(format!("{}: {field}", path.display()), message)
        }
        other => other,
    }
}

fn parse_architecture(hf: &HfConfig) -> Result<Architecture> {
    let name = hf
        .architectures
        .first()
        .map(String::as_str)
        .or(hf.model_type.as_deref());
    match name {
        Some("Qwen2ForCausalLM") | Some("qwen2") => Ok(Architecture::Qwen2),
        Some("LlamaForCausalLM") | Some("llama") => Ok(Architecture::Llama),
        Some(other) => Err(ModelError::config(
            "architectures",
            format!("{other:?} unsupported; supported: Qwen2ForCausalLM, LlamaForCausalLM"),
        )),
        None => Err(ModelError::config(
            "architectures",
            "neither architectures nor model_type is set",
        )),
    }
}

fn parse_rope_scaling(v: Option<&serde_json::Value>) -> Result<Option<Llama3RopeScaling>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("");
    match kind {
        "default" | "" => Ok(None),
        "llama3" => {
            let num = |k: &str| {
                v.get(k).and_then(|x| x.as_f64()).ok_or_else(|| {
                    ModelError::config(format!("rope_scaling.{k}"), "missing or not a number")
                })
            };
            Ok(Some(Llama3RopeScaling {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
            }))
        }
        other => Err(ModelError::config(
            "rope_scaling.rope_type",
            format!("{other:?} unsupported; supported: default, llama3"),
        )),
    }
}

/// Sizes of the tiny built-in model: a Qwen2-layout decoder over the built-in tokenizer's
/// vocabulary, initialised from a seed. Saved tiny models are ordinary Qwen2 checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TinyConfig {
    /// Model width d (default 128).
    pub hidden_size: usize,
    /// Decoder layers (default 2).
    pub num_layers: usize,
    /// Query heads (default 4).
    pub num_heads: usize,
    /// Key/value heads (default 4; must divide `num_heads`).
    pub num_kv_heads: usize,
    /// MLP hidden width (default 4·d = 512).
    pub intermediate_size: usize,
    /// Longest sequence (default 2048).
    pub max_position_embeddings: usize,
    /// Rotary base θ (default 10000).
    pub rope_theta: f64,
    /// Share the embedding with the output projection (default false).
    pub tie_word_embeddings: bool,
    /// Standard deviation of the normal initialisation of every matrix (default 0.02).
    pub init_std: f64,
}

impl Default for TinyConfig {
    fn default() -> Self {
        TinyConfig {
            hidden_size: 128,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 4,
            intermediate_size: 512,
            max_position_embeddings: 2048,
            rope_theta: 10_000.0,
            tie_word_embeddings: false,
            init_std: 0.02,
        }
    }
}

impl TinyConfig {
    /// The decoder configuration for this tiny model over a vocabulary of `vocab_size` tokens.
    pub fn model_config(&self, vocab_size: usize) -> Result<ModelConfig> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ModelError::config(
                    format!("tiny.{name}"),
                    "must be positive",
                ));
            }
        }
        if self.hidden_size % self.num_heads != 0 || (self.hidden_size / self.num_heads) % 2 != 0 {
            return Err(ModelError::config(
                "tiny.num_heads",
                format!(
                    "hidden_size {} must split into {} heads of even width",
                    self.hidden_size, self.num_heads
                ),
            ));
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(ModelError::config(
                "tiny.num_kv_heads",
                format!(
                    "{} does not divide num_heads {}",
                    self.num_kv_heads, self.num_heads
                ),
            ));
        }
        if !(self.init_std > 0.0 && self.init_std.is_finite()) {
            return Err(ModelError::config(
                "tiny.init_std",
                "must be a positive number",
            ));
        }
        let cfg = ModelConfig {
            architecture: Architecture::Qwen2,
            vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.hidden_size / self.num_heads,
            rope_theta: self.rope_theta,
            rope_scaling: None,
            rms_norm_eps: 1e-6,
            max_position_embeddings: self.max_position_embeddings,
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_bias: true,
            o_bias: false,
            mlp_bias: false,
        };
        cfg.validate().map_err(|e| match e {
            ModelError::Config { field, message } => {
                let field = match field.as_str() {
                    "num_hidden_layers" => "num_layers".to_string(),
                    "num_attention_heads" => "num_heads".to_string(),
                    "num_key_value_heads" => "num_kv_heads".to_string(),
                    _ => field,
                };
                ModelError::config(format!("tiny.{field}"), message)
            }
            other => other,
        })?;
        Ok(cfg)
    }
}
