//! Reading checkpoint files: a Hugging Face directory's `config.json` and safetensors weights
//! (single file or sharded, tensor by tensor), and a PEFT adapter's configuration and weights.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::fsutil::{read_json, read_text, require_file};
use crate::lora::{LoraConfig, TargetModule};

/// A Hugging Face `config.json`: the decoder configuration, the document itself (its extra
/// fields are written back on save) and the dtype the weights are saved in.
pub(crate) struct HfConfig {
    /// The decoder configuration.
    pub model: ModelConfig,
    /// The document as read.
    pub json: serde_json::Value,
    /// `torch_dtype` (or `dtype`): bf16, f16, or f32 for anything else.
    pub dtype: DType,
}

impl HfConfig {
    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = require_file(dir.join("config.json"), "the model configuration")?;
        let text = read_text(&path)?;
        let model = ModelConfig::from_hf_json(&text, &path)?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Json {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let field = json.get("torch_dtype").or_else(|| json.get("dtype"));
        let dtype = match field.and_then(|v| v.as_str()) {
            Some("bfloat16") => DType::BF16,
            Some("float16") => DType::F16,
            _ => DType::F32,
        };
        Ok(HfConfig { model, json, dtype })
    }
}

/// The weights of a checkpoint directory, memory-mapped; tensors are read one at a time.
pub(crate) struct Checkpoint {
    dir: PathBuf,
    files: MmapedSafetensors,
    names: HashMap<String, Vec<usize>>,
}

impl Checkpoint {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let paths = shard_paths(dir)?
            .into_iter()
            .map(|p| require_file(p, "a weight shard"))
            .collect::<Result<Vec<_>>>()?;
        // SAFETY: the files are mapped read-only; they must not be modified while the model
        // is being loaded (every tensor is copied out before `Checkpoint` is dropped).
        let files = unsafe { MmapedSafetensors::multi(&paths) }.map_err(|e| {
            ModelError::io(
                "read safetensors in",
                dir,
                std::io::Error::other(e.to_string()),
            )
        })?;
        let mut names = HashMap::new();
        for (name, view) in files.tensors() {
            names.insert(name, view.shape().to_vec());
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            files,
            names,
        })
    }

    /// Reads `name`, checks its shape, converts it to `dtype` and moves it to `device`.
    pub fn load(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let actual = self
            .names
            .get(name)
            .ok_or_else(|| ModelError::MissingWeight {
                name: name.to_string(),
                path: self.dir.clone(),
            })?;
        if actual.as_slice() != shape {
            return Err(ModelError::WeightShape {
                name: name.to_string(),
                actual: actual.clone(),
                expected: shape.to_vec(),
            });
        }
        let t = self.files.load(name, &Device::Cpu)?.to_dtype(dtype)?;
        check_finite(&t, name, &self.dir)?;
        Ok(t.to_device(device)?)
    }
}

/// Errors, naming the tensor and the file, when `t` holds a NaN or an infinity.
pub fn check_finite(t: &Tensor, name: &str, path: &Path) -> Result<()> {
    // x · 0 is 0 for every finite x and NaN otherwise, so the sum is finite only if all are.
    let probe = t
        .affine(0.0, 0.0)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    if probe.is_finite() {
        Ok(())
    } else {
        Err(ModelError::NonFiniteWeight {
            name: name.to_string(),
            path: path.to_path_buf(),
        })
    }
}

/// The safetensors files of a checkpoint directory.
fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        let what = "the weights (model.safetensors, or model.safetensors.index.json with shards)";
        return Err(ModelError::MissingFile { path: single, what });
    }
    let json = read_json(&index)?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Json {
            path: index.clone(),
            message: "no \"weight_map\" object".into(),
        })?;
    let files: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
    if files.is_empty() {
        return Err(ModelError::Json {
            path: index,
            message: "\"weight_map\" lists no files".into(),
        });
    }
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// Reads a PEFT `adapter_config.json` into a [`LoraConfig`].
pub(crate) fn read_adapter_config(dir: &Path) -> Result<LoraConfig> {
    let path = require_file(dir.join("adapter_config.json"), "the adapter configuration")?;
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
