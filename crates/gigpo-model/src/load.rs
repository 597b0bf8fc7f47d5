//! Loading policies: Hugging Face directories, llama.cpp GGUF files and PEFT adapters.

use std::path::Path;

use candle_core::{DType, Device};

use crate::checkpoint::{check_finite, read_adapter_config, Checkpoint, HfConfig};
use crate::error::{ModelError, Result};
use crate::fsutil::{read_safetensors, require_file};
use crate::gguf::{gguf_err, is_gguf_path, GgufFile};
use crate::lora::LoraConfig;
use crate::policy::Policy;
use crate::save::SaveMode;
use crate::tokenizer::Tokenizer;
use crate::transformer::Transformer;
use crate::weights::WeightSpec;

impl Policy {
    /// Loads a Hugging Face Qwen2 or Llama directory: `config.json`, `model.safetensors` (or
    /// `model.safetensors.index.json` and its shards), `tokenizer.json`, and optionally
    /// `tokenizer_config.json` / `chat_template.jinja` / `generation_config.json`. Weights are
    /// converted to f32. With `lora`, the base weights are frozen and a fresh adapter is
    /// trainable; without, every weight is trainable.
    ///
    /// `dir` may also be a llama.cpp GGUF file (Llama or Qwen2): its weights are dequantized
    /// to f32 and its tokenizer and chat template are built from the file's metadata.
    pub fn load(dir: &Path, device: &Device, lora: Option<LoraConfig>) -> Result<Self> {
        if is_gguf_path(dir) {
            return Self::load_gguf(dir, device, lora);
        }
        let cfg = HfConfig::read(dir)?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        if tokenizer.vocab_size() > cfg.model.vocab_size {
            return Err(ModelError::config(
                "vocab_size",
                format!(
                    "{} is smaller than the tokenizer's {} ids",
                    cfg.model.vocab_size,
                    tokenizer.vocab_size()
                ),
            ));
        }
        let ckpt = Checkpoint::open(dir)?;
        let mut src = |spec: &WeightSpec| ckpt.load(&spec.name(), &spec.shape, DType::F32, device);
        let model = Transformer::build(&cfg.model, device, &mut src)?;
        drop(ckpt);
        let source = dir.display().to_string();
        let loaded = Loaded {
            model,
            tokenizer,
            hf_config: cfg.json,
            source,
            save_dtype: cfg.dtype,
        };
        loaded.into_policy(device, lora)
    }

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
        let mut src = |spec: &WeightSpec| {
            let t = g.load(spec, &cfg)?;
            check_finite(&t, &spec.name(), path)?;
            t.to_device(device).map_err(Into::into)
        };
        let model = Transformer::build(&cfg, device, &mut src)?;
        let loaded = Loaded {
            model,
            tokenizer,
            hf_config,
            source: path.display().to_string(),
            save_dtype: DType::F32,
        };
        loaded.into_policy(device, lora)
    }

    /// Loads `dir` as [`Policy::load`] does, with the adapter of a PEFT directory
    /// (`adapter_config.json`, `adapter_model.safetensors`) applied on top.
    pub fn load_with_adapter(dir: &Path, adapter_dir: &Path, device: &Device) -> Result<Self> {
        let lora = read_adapter_config(adapter_dir)?;
        let mut p = Self::load(dir, device, Some(lora))?;
        p.load_adapter_weights(adapter_dir)?;
        Ok(p)
    }

    /// Adds the adapter of a PEFT directory (`adapter_config.json`,
    /// `adapter_model.safetensors`) to a model that has none, e.g. the tiny model; the base
    /// weights are frozen and the adapter becomes the trainable part.
    pub fn apply_adapter(&mut self, adapter_dir: &Path) -> Result<()> {
        let lora = read_adapter_config(adapter_dir)?;
        self.add_lora(lora)?;
        self.load_adapter_weights(adapter_dir)
    }

    /// Replaces the adapter's weights with those of a PEFT directory saved by
    /// [`SaveMode::AdapterOnly`] (or by PEFT with the same rank and targets).
    pub fn load_adapter_weights(&mut self, adapter_dir: &Path) -> Result<()> {
        let path = require_file(
            adapter_dir.join("adapter_model.safetensors"),
            "the adapter weights",
        )?;
        if self.lora.is_none() {
            return Err(ModelError::arg(
                "adapter",
                "the model has no LoRA adapter to load into",
            ));
        }
        let tensors = read_safetensors(&path, &Device::Cpu)?;
        for (name, var) in &self.trainable {
            let t = tensors.get(name).ok_or_else(|| ModelError::MissingWeight {
                name: name.clone(),
                path: path.clone(),
            })?;
            if t.dims() != var.dims() {
                return Err(ModelError::WeightShape {
                    name: name.clone(),
                    actual: t.dims().to_vec(),
                    expected: var.dims().to_vec(),
                });
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }
}

/// What a checkpoint on disk gives: the decoder, the tokenizer and what saving writes back.
struct Loaded {
    model: Transformer,
    tokenizer: Tokenizer,
    hf_config: serde_json::Value,
    source: String,
    save_dtype: DType,
}

impl Loaded {
    /// The policy of these weights, every one trainable, or with `lora` frozen under a fresh
    /// adapter.
    fn into_policy(self, device: &Device, lora: Option<LoraConfig>) -> Result<Policy> {
        let seed = lora.as_ref().map_or(0, |l| l.seed);
        let mut policy = Policy::assemble(
            self.model,
            self.tokenizer,
            device,
            Some(self.hf_config),
            self.source,
            self.save_dtype,
            seed,
        )?;
        if let Some(l) = lora {
            policy.add_lora(l)?;
        }
        Ok(policy)
    }
}

/// Converts a Llama or Qwen2 GGUF file into a Hugging Face directory at `out`, written
/// atomically through [`Policy::save`] ([`SaveMode::Full`]): `config.json`,
/// `generation_config.json`, `model.safetensors` (f32, the dequantized weights),
/// `tokenizer.json` and `tokenizer_config.json` with the chat template.
pub fn convert_gguf(gguf: &Path, out: &Path) -> Result<()> {
    let policy = Policy::load_gguf(gguf, &Device::Cpu, None)?;
    policy.save(out, SaveMode::Full)
}
