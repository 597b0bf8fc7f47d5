//! Reading llama.cpp GGUF files (Llama and Qwen2 architectures): the configuration from the
//! `llama.*` / `qwen2.*` metadata, the tokenizer and chat template from `tokenizer.*`, and the
//! weights dequantized to f32 and renamed to the Hugging Face layout.
//!
//! llama.cpp's converter permutes the rows of Llama's q/k projections (its rotary embedding
//! rotates adjacent pairs, transformers' rotates halves); loading undoes that, so a GGUF model
//! equals the Hugging Face model it was converted from.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::config::{Architecture, ModelConfig};
use crate::error::{ModelError, Result};
use crate::policy::Policy;
use crate::tokenizer::Tokenizer;
use crate::transformer::{Init, Transformer};
use crate::LoraConfig;

/// The four bytes every GGUF file starts with.
const MAGIC: &[u8; 4] = b"GGUF";

/// GPT-2's pre-tokenizer split (also SmolLM's): byte-level with its built-in regex.
const PRE_GPT2: &[&str] = &["gpt2", "gpt-2", "default", "smollm"];

/// Llama 3's pre-tokenizer regex (`tokenizer.ggml.pre = llama-bpe`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's pre-tokenizer regex (`tokenizer.ggml.pre = qwen2`).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's `token_type` of control tokens (special tokens).
const TOKEN_CONTROL: i64 = 3;
/// llama.cpp's `token_type` of user-defined tokens (added, not special).
const TOKEN_USER_DEFINED: i64 = 4;

/// An open GGUF file: its parsed header and a reader for the tensor data.
pub(crate) struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
    arch: Architecture,
}

/// Whether `path` names a GGUF file rather than a model directory: any regular file, or a
/// path ending in `.gguf`, is taken for one (opening it then checks the magic bytes).
pub(crate) fn is_gguf_path(path: &Path) -> bool {
    path.is_file()
        || path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The message of a candle error without the backtrace candle appends when
/// `RUST_BACKTRACE` is set.
fn candle_message(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

impl GgufFile {
    /// Opens `path` and parses its header; errors when it is not a GGUF file or is truncated.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| ModelError::io("open", path, e))?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut file, &mut magic).map_err(|e| ModelError::io("read", path, e))?;
        if n < 4 || &magic != MAGIC {
            return Err(gguf_err(
                path,
                format!(
                    "not a GGUF file (starts with {:?}, expected \"GGUF\")",
                    &magic[..n]
                ),
            ));
        }
        let mut reader =
            BufReader::new(File::open(path).map_err(|e| ModelError::io("open", path, e))?);
        let content = Content::read(&mut reader).map_err(|e| {
            gguf_err(
                path,
                format!("unreadable header (truncated?): {}", candle_message(&e)),
            )
        })?;
        let mut g = GgufFile {
            path: path.to_path_buf(),
            content,
            reader,
            arch: Architecture::Llama,
        };
        g.arch = match g.string("general.architecture")?.as_str() {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            other => {
                return Err(g.field_err(
                    "general.architecture",
                    format!("{other:?} unsupported; supported: llama, qwen2"),
                ))
            }
        };
        Ok(g)
    }

    fn field_err(&self, key: &str, message: impl std::fmt::Display) -> ModelError {
        gguf_err(&self.path, format!("metadata {key}: {message}"))
    }

    fn value(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| self.field_err(key, "missing"))
    }

    fn string(&self, key: &str) -> Result<String> {
        match self.value(key)? {
            Value::String(s) => Ok(s.clone()),
            v => Err(self.field_err(key, format!("expected a string, found {v:?}"))),
        }
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>> {
        self.content
            .metadata
            .contains_key(key)
            .then(|| self.string(key))
            .transpose()
    }

    fn uint(&self, key: &str) -> Result<usize> {
        let v = self.value(key)?;
        as_i64(v)
            .filter(|x| *x >= 0)
            .map(|x| x as usize)
            .ok_or_else(|| {
                self.field_err(key, format!("expected an unsigned integer, found {v:?}"))
            })
    }

    fn opt_uint(&self, key: &str) -> Result<Option<usize>> {
        self.content
            .metadata
            .contains_key(key)
            .then(|| self.uint(key))
            .transpose()
    }

    fn opt_float(&self, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        match v {
            // The shortest decimal that rounds to the f32 (1e-6, not 9.99999997e-7), as
            // config.json would spell it.
            Value::F32(x) => Ok(Some(x.to_string().parse().unwrap_or(*x as f64))),
            Value::F64(x) => Ok(Some(*x)),
            v => Err(self.field_err(key, format!("expected a number, found {v:?}"))),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        let Value::Array(items) = self.value(key)? else {
            return Err(self.field_err(key, "expected an array of strings"));
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                v => Err(self.field_err(key, format!("expected strings, found {v:?}"))),
            })
            .collect()
    }

    fn ints(&self, key: &str) -> Result<Vec<i64>> {
        let Value::Array(items) = self.value(key)? else {
            return Err(self.field_err(key, "expected an array of integers"));
        };
        items
            .iter()
            .map(|v| as_i64(v).ok_or_else(|| self.field_err(key, "expected integers")))
            .collect()
    }

    /// `{arch}.{suffix}`, e.g. `llama.block_count`.
    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch.model_type())
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

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
        let embed = self.tensor_dims("token_embd.weight")?;
        let qwen = self.arch == Architecture::Qwen2;
        let attn_bias = self.has_tensor("blk.0.attn_q.bias");
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
            tie_word_embeddings: !self.has_tensor("output.weight"),
            qkv_bias: qwen || attn_bias,
            o_bias: !qwen && attn_bias,
            mlp_bias: !qwen && self.has_tensor("blk.0.ffn_up.bias"),
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

    fn tensor_dims(&self, name: &str) -> Result<Vec<usize>> {
        self.content
            .tensor_infos
            .get(name)
            .map(|t| t.shape.dims().to_vec())
            .ok_or_else(|| ModelError::MissingWeight {
                name: name.to_string(),
                path: self.path.clone(),
            })
    }

    /// Reads the tensor that holds the Hugging Face weight `hf_name`, dequantized to f32 on
    /// the CPU, q/k rows restored to the Hugging Face order for Llama, shape checked.
    fn load(&mut self, hf_name: &str, shape: &[usize], cfg: &ModelConfig) -> Result<Tensor> {
        let name = gguf_name(hf_name).ok_or_else(|| ModelError::MissingWeight {
            name: hf_name.to_string(),
            path: self.path.clone(),
        })?;
        let dims = self.tensor_dims(&name)?;
        if dims != shape {
            return Err(ModelError::WeightShape {
                name: format!("{name} ({hf_name})"),
                actual: dims,
                expected: shape.to_vec(),
            });
        }
        let q = self
            .content
            .tensor(&mut self.reader, &name, &Device::Cpu)
            .map_err(|e| gguf_err(&self.path, format!("tensor {name}: {}", candle_message(&e))))?;
        let t = q.dequantize(&Device::Cpu)?.to_dtype(DType::F32)?;
        if self.arch != Architecture::Llama {
            return Ok(t);
        }
        if name.ends_with(".attn_q.weight") || name.ends_with(".attn_q.bias") {
            return unpermute(&t, cfg.num_heads);
        }
        if name.ends_with(".attn_k.weight") || name.ends_with(".attn_k.bias") {
            return unpermute(&t, cfg.num_kv_heads);
        }
        Ok(t)
    }

    /// The tokenizer (`tokenizer.ggml.model = gpt2`: byte-level BPE) with the chat template.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let model = self.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(self.field_err(
                "tokenizer.ggml.model",
                format!("{model:?} unsupported; supported: gpt2 (byte-level BPE)"),
            ));
        }
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let doc = self.tokenizer_json(&tokens)?;
        let config = self.tokenizer_config(&tokens)?;
        let mut extra_eos = Vec::new();
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
            if let Some(id) = self.token_id(key, &tokens)? {
                extra_eos.push(id as u32);
            }
        }
        Tokenizer::from_json_parts(&doc, config, &extra_eos)
            .map_err(|e| gguf_err(&self.path, format!("tokenizer: {e}")))
    }

    /// A `tokenizer.json` document equal to what transformers builds from the same metadata.
    fn tokenizer_json(&self, tokens: &[String]) -> Result<serde_json::Value> {
        let merges = self.strings("tokenizer.ggml.merges")?;
        let types = if self
            .content
            .metadata
            .contains_key("tokenizer.ggml.token_type")
        {
            self.ints("tokenizer.ggml.token_type")?
        } else {
            Vec::new()
        };
        let vocab: serde_json::Map<String, serde_json::Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        let added: Vec<serde_json::Value> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == TOKEN_CONTROL || **t == TOKEN_USER_DEFINED)
            .filter_map(|(i, t)| tokens.get(i).map(|tok| (i, *t == TOKEN_CONTROL, tok)))
            .map(|(i, special, tok)| {
                json!({"id": i, "content": tok, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": special})
            })
            .collect();
        let (normalizer, pre_tokenizer) = self.pre_tokenizer()?;
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                                "trim_offsets": false, "use_regex": true});
        Ok(json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": byte_level,
            "decoder": byte_level,
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false,
                "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges,
            },
        }))
    }

    /// Normalizer and pre-tokenizer for `tokenizer.ggml.pre`.
    fn pre_tokenizer(&self) -> Result<(serde_json::Value, serde_json::Value)> {
        let pre = self.opt_string("tokenizer.ggml.pre")?;
        let split = |regex: &str| {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated",
                 "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
                 "use_regex": false},
            ]})
        };
        match pre.as_deref() {
            None => Ok((json!(null), byte_level_pre())),
            Some(p) if PRE_GPT2.contains(&p) => Ok((json!(null), byte_level_pre())),
            Some("llama-bpe") | Some("llama3") => Ok((json!(null), split(LLAMA3_REGEX))),
            Some("qwen2") => Ok((json!({"type": "NFC"}), split(QWEN2_REGEX))),
            Some(other) => Err(self.field_err(
                "tokenizer.ggml.pre",
                format!("{other:?} unsupported; supported: gpt2, smollm, llama-bpe, qwen2"),
            )),
        }
    }

    /// `tokenizer_config.json`: chat template and the BOS/EOS/padding tokens.
    fn tokenizer_config(&self, tokens: &[String]) -> Result<serde_json::Value> {
        let mut cfg = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": false,
            "model_max_length": self.uint(&self.key("context_length"))?,
        });
        if let Some(t) = self.opt_string("tokenizer.chat_template")? {
            cfg["chat_template"] = json!(t);
        }
        for (field, key) in [
            ("bos_token", "tokenizer.ggml.bos_token_id"),
            ("eos_token", "tokenizer.ggml.eos_token_id"),
            ("pad_token", "tokenizer.ggml.padding_token_id"),
            ("unk_token", "tokenizer.ggml.unknown_token_id"),
        ] {
            if let Some(id) = self.token_id(key, tokens)? {
                cfg[field] = json!(tokens[id]);
            }
        }
        Ok(cfg)
    }

    fn token_id(&self, key: &str, tokens: &[String]) -> Result<Option<usize>> {
        match self.opt_uint(key)? {
            Some(id) if id >= tokens.len() => Err(self.field_err(
                key,
                format!("id {id} is outside the vocabulary of {}", tokens.len()),
            )),
            other => Ok(other),
        }
    }

    /// The `config.json` object of the converted model (with BOS/EOS/padding ids).
    fn hf_config(&self, cfg: &ModelConfig) -> Result<serde_json::Value> {
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

fn byte_level_pre() -> serde_json::Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
           "use_regex": true})
}

fn gguf_err(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Gguf {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::U8(x) => Some(*x as i64),
        Value::I8(x) => Some(*x as i64),
        Value::U16(x) => Some(*x as i64),
        Value::I16(x) => Some(*x as i64),
        Value::U32(x) => Some(*x as i64),
        Value::I32(x) => Some(*x as i64),
        Value::U64(x) => i64::try_from(*x).ok(),
        Value::I64(x) => Some(*x),
        _ => None,
    }
}

/// Reads until `buf` is full or the file ends; returns the number of bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The GGUF tensor name of a Hugging Face weight name.
pub(crate) fn gguf_name(hf: &str) -> Option<String> {
    let fixed: HashMap<&str, &str> = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ]
    .into_iter()
    .collect();
    if let Some(n) = fixed.get(hf) {
        return Some((*n).to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let short = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}.{kind}"))
}

/// Undoes llama.cpp's row permutation of a q/k projection (weight [heads·d, in] or bias
/// [heads·d]): per head, GGUF holds rows in the order (i, 2) for i < d/2, Hugging Face in the
/// order (2, i).
pub(crate) fn unpermute(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let half = rows / heads / 2;
    let mut split = vec![heads, half, 2];
    split.extend_from_slice(&dims[1..]);
    Ok(t.reshape(split)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

impl Policy {
    /// Loads a Llama or Qwen2 GGUF file: weights dequantized to f32, tokenizer and chat
    /// template from the file's metadata. With `lora`, a fresh adapter is the trainable part.
    pub(crate) fn load_gguf(
        path: &Path,
        device: &Device,
        lora: Option<LoraConfig>,
    ) -> Result<Self> {
        let mut g = GgufFile::open(path)?;
        let cfg = g.model_config()?;
        let tokenizer = g.tokenizer()?;
        if tokenizer.vocab_size() > cfg.vocab_size {
            return Err(gguf_err(
                path,
                format!(
                    "token_embd.weight has {} rows, fewer than the tokenizer's {} ids",
                    cfg.vocab_size,
                    tokenizer.vocab_size()
                ),
            ));
        }
        let hf_config = g.hf_config(&cfg)?;
        let mut src = |name: &str, shape: &[usize], _: Init| {
            let t = g.load(name, shape, &cfg)?;
            crate::load::check_finite(&t, name, path)?;
            t.to_device(device).map_err(Into::into)
        };
        let model = Transformer::build(&cfg, device, &mut src)?;
        let seed = lora.as_ref().map_or(0, |l| l.seed);
        let source = path.display().to_string();
        let mut policy = Self::assemble(
            model,
            tokenizer,
            device,
            Some(hf_config),
            source,
            DType::F32,
            seed,
        )?;
        if let Some(l) = lora {
            policy.add_lora(l)?;
        }
        Ok(policy)
    }
}

/// Converts a Llama or Qwen2 GGUF file into a Hugging Face directory at `out`, written
/// atomically through [`Policy::save`] ([`crate::SaveMode::Full`]): `config.json`,
/// `generation_config.json`, `model.safetensors` (f32, the dequantized weights),
/// `tokenizer.json` and `tokenizer_config.json` with the chat template.
pub fn convert_gguf(gguf: &Path, out: &Path) -> Result<()> {
    let policy = Policy::load_gguf(gguf, &Device::Cpu, None)?;
    policy.save(out, crate::SaveMode::Full)
}
