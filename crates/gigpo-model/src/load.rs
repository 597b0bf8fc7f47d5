//! Reading Hugging Face safetensors checkpoints (single file or sharded), tensor by tensor.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};
use crate::fsutil::read_json;

/// The weights of a checkpoint directory, memory-mapped; tensors are read one at a time.
pub(crate) struct Checkpoint {
    dir: PathBuf,
    files: MmapedSafetensors,
    names: HashMap<String, Vec<usize>>,
}

impl Checkpoint {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let paths = shard_paths(dir)?;
        for p in &paths {
            if !p.is_file() {
                return Err(ModelError::MissingFile {
                    path: p.clone(),
                    what: "a weight shard",
                });
            }
        }
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
        return Err(ModelError::MissingFile {
            path: single,
            what: "the weights (model.safetensors, or model.safetensors.index.json with shards)",
        });
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
