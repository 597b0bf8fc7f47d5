//! Writing models in the Hugging Face layout: full weights, merged weights, or a PEFT adapter.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};

use crate::atomic::atomic_dir;
use crate::error::{ModelError, Result};
use crate::fsutil::{read_json, write_file, write_safetensors as write_safetensors_file};
use crate::lora::{LoraConfig, TargetModule};
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
        let mut tensors = Vec::new();
        let mut adapters: HashMap<String, Tensor> = HashMap::new();
        if merged {
            for (i, layer) in self.model.layers.iter().enumerate() {
                for t in TargetModule::ALL {
                    let lin = layer.proj(t);
                    if lin.adapter.is_some() {
                        adapters.insert(
                            format!("model.layers.{i}.{}.weight", t.path()),
                            lin.merged_weight()?,
                        );
                    }
                }
            }
        }
        for (name, t) in self.model.named_weights() {
            let t = adapters.remove(&name).unwrap_or(t);
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

    /// Replaces the adapter's weights with those of a PEFT directory saved by
    /// [`SaveMode::AdapterOnly`] (or by PEFT with the same rank and targets).
    pub fn load_adapter_weights(&mut self, adapter_dir: &Path) -> Result<()> {
        let path = adapter_dir.join("adapter_model.safetensors");
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path,
                what: "the adapter weights",
            });
        }
        if self.lora.is_none() {
            return Err(ModelError::arg(
                "adapter",
                "the model has no LoRA adapter to load into",
            ));
        }
        let tensors = crate::fsutil::read_safetensors(&path, &candle_core::Device::Cpu)?;
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

/// Reads a PEFT `adapter_config.json` into a [`LoraConfig`].
pub(crate) fn read_adapter_config(dir: &Path) -> Result<LoraConfig> {
    let path = dir.join("adapter_config.json");
    if !path.is_file() {
        return Err(ModelError::MissingFile {
            path,
            what: "the adapter configuration",
        });
    }
    let v = read_json(&path)?;
    let bad = |field: &str, msg: &str| ModelError::Json {
        path: path.clone(),
        message: format!("{field}: {msg}"),
    };
    let rank = v
        .get("r")
        .and_then(|x| x.as_u64())
        .ok_or_else(|| bad("r", "missing or not an integer"))? as usize;
    let alpha = v
        .get("lora_alpha")
        .and_then(|x| x.as_f64())
        .ok_or_else(|| bad("lora_alpha", "missing or not a number"))?;
    let dropout = v
        .get("lora_dropout")
        .and_then(|x| x.as_f64())
        .unwrap_or(0.0);
    let names = v
        .get("target_modules")
        .and_then(|x| x.as_array())
        .ok_or_else(|| bad("target_modules", "missing or not a list"))?;
    let mut target_modules = Vec::new();
    for n in names {
        let s = n.as_str().unwrap_or_default();
        target_modules.push(
            TargetModule::from_name(s)
                .ok_or_else(|| bad("target_modules", &format!("unsupported module {s:?}")))?,
        );
    }
    Ok(LoraConfig {
        rank,
        alpha,
        dropout,
        target_modules,
        seed: 0,
    })
}

fn torch_dtype(d: DType) -> &'static str {
    match d {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).expect("JSON value serialises");
    write_file(path, text.as_bytes())
}

/// Writes `model.safetensors`, or shards plus `model.safetensors.index.json` when large.
fn write_safetensors(dir: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut shards: Vec<Vec<&(String, Tensor)>> = vec![Vec::new()];
    let mut size = 0;
    for entry in tensors {
        let bytes = entry.1.elem_count() * entry.1.dtype().size_in_bytes();
        if size + bytes > MAX_SHARD_BYTES && !shards.last().expect("non-empty").is_empty() {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes;
        shards.last_mut().expect("non-empty").push(entry);
    }
    if shards.len() == 1 {
        let map: HashMap<&str, Tensor> = shards[0]
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        return write_safetensors_file(&map, &dir.join("model.safetensors"));
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    let total: usize = tensors
        .iter()
        .map(|(_, t)| t.elem_count() * t.dtype().size_in_bytes())
        .sum();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
        let map: HashMap<&str, Tensor> =
            shard.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        write_safetensors_file(&map, &dir.join(&file))?;
        for (name, _) in shard {
            weight_map.insert(name.clone(), serde_json::json!(file));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    write_json(&dir.join("model.safetensors.index.json"), &index)
}
