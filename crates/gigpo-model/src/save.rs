//! Writing models in the Hugging Face layout: full weights, merged weights, or a PEFT adapter.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};

use crate::atomic::atomic_dir;
use crate::error::{ModelError, Result};
use crate::fsutil::{write_json, write_safetensors as write_safetensors_file};
use crate::policy::Policy;

/// What [`Policy::save`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveMode {
    /// The base weights as they are (an adapter, if any, is left out), `config.json`,
    /// `generation_config.json` and the tokenizer files.
    Full,
    /// Only the adapter, in PEFT's layout: `adapter_config.json` and
    /// `adapter_model.safetensors` (plus the tokenizer files). Errors without an adapter.
    AdapterOnly,
    /// Like `Full`, with the adapter folded into the weights (W + (α/r)·B·A), so the result
    /// loads in transformers or vLLM as a plain model. Same as `Full` without an adapter.
    Merged,
}

/// Largest shard written; bigger models get `model-0000i-of-0000n.safetensors` and an index.
const MAX_SHARD_BYTES: usize = 4 << 30;

impl Policy {
    /// Writes the model to `dir` atomically: everything goes to a temporary directory next to
    /// `dir`, which then replaces `dir`. Weights are written in the dtype the checkpoint had
    /// (`torch_dtype`; f32 for the tiny model).
    pub fn save(&self, dir: &Path, mode: SaveMode) -> Result<()> {
        atomic_dir(dir, |tmp| {
            self.tokenizer.save(tmp)?;
            match mode {
                SaveMode::AdapterOnly => self.write_adapter(tmp),
                SaveMode::Full => self.write_weights(tmp, false),
                SaveMode::Merged => self.write_weights(tmp, true),
            }
        })
    }

    fn write_weights(&self, dir: &Path, merged: bool) -> Result<()> {
        let model = if merged {
            self.model.merged()?
        } else {
            self.model.clone()
        };
        let mut tensors = Vec::new();
        for (name, t) in model.named_weights()? {
            tensors.push((name, t.detach().to_dtype(self.save_dtype)?));
        }
        write_safetensors(dir, &tensors)?;
        let dtype = torch_dtype(self.save_dtype);
        let config = match &self.hf_config {
            Some(c) => {
                let mut c = c.clone();
                c["torch_dtype"] = serde_json::json!(dtype);
                if c.get("dtype").is_some() {
                    c["dtype"] = serde_json::json!(dtype);
                }
                c
            }
            None => {
                let mut c = self.model.cfg.to_hf_json(dtype);
                if let Some(&eos) = self.tokenizer.eos_ids().first() {
                    c["eos_token_id"] = serde_json::json!(eos);
                }
                c["pad_token_id"] = serde_json::json!(self.tokenizer.pad_id());
                c
            }
        };
        write_json(&dir.join("config.json"), &config)?;
        let gen = serde_json::json!({
            "eos_token_id": self.tokenizer.eos_ids(),
            "pad_token_id": self.tokenizer.pad_id(),
        });
        write_json(&dir.join("generation_config.json"), &gen)
    }

    fn write_adapter(&self, dir: &Path) -> Result<()> {
        let cfg = self.lora.as_ref().ok_or_else(|| {
            ModelError::arg("mode", "AdapterOnly needs a model with a LoRA adapter")
        })?;
        let tensors: Vec<(String, Tensor)> = self
            .trainable
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect();
        let map: HashMap<String, Tensor> = tensors.into_iter().collect();
        let path = dir.join("adapter_model.safetensors");
        write_safetensors_file(&map, &path)?;
        let targets: Vec<&str> = cfg.target_modules.iter().map(|t| t.name()).collect();
        let json = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": cfg.rank,
            "lora_alpha": cfg.alpha,
            "lora_dropout": cfg.dropout,
            "target_modules": targets,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "use_rslora": false,
            "use_dora": false,
            "modules_to_save": null,
            "layers_to_transform": null,
            "layers_pattern": null,
            "rank_pattern": {},
            "alpha_pattern": {},
            "base_model_name_or_path": self.source,
            "revision": null,
        });
        write_json(&dir.join("adapter_config.json"), &json)
    }
}

fn torch_dtype(d: DType) -> &'static str {
    match d {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
}

/// Writes `model.safetensors`, or shards plus `model.safetensors.index.json` when large.
fn write_safetensors(dir: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut shards: Vec<Vec<&(String, Tensor)>> = vec![Vec::new()];
    let mut size = 0;
    for entry in tensors {
        let bytes = byte_size(&entry.1);
        if size + bytes > MAX_SHARD_BYTES && !shards.last().expect("non-empty").is_empty() {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes;
        shards.last_mut().expect("non-empty").push(entry);
    }
    if shards.len() == 1 {
        return write_shard(&shards[0], &dir.join("model.safetensors"));
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    let total: usize = tensors.iter().map(|(_, t)| byte_size(t)).sum();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
        write_shard(shard, &dir.join(&file))?;
        for (name, _) in shard {
            weight_map.insert(name.clone(), serde_json::json!(file));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    write_json(&dir.join("model.safetensors.index.json"), &index)
}

/// Bytes the data of `t` takes in a file.
fn byte_size(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// Writes the tensors of one shard to the safetensors file `path`.
fn write_shard(shard: &[&(String, Tensor)], path: &Path) -> Result<()> {
    let map: HashMap<&str, Tensor> = shard.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    write_safetensors_file(&map, path)
}
