//! Checkpoints: `run_dir/checkpoints/iter-N/`, written atomically, the last few kept.
//!
//! A checkpoint holds
//! - `trainable.safetensors`: every trainable variable in f32, by name (exact; used to resume),
//! - `optimizer.safetensors`: AdamW's step count and moments,
//! - `state.json`: iteration, environment steps so far, base seed, and how every random stream
//!   is derived (all randomness of iteration i is a function of the base seed and i, so the
//!   iteration number restores the random state),
//! - `config.toml`: the configuration of the run,
//! - `model/`: the policy in the Hugging Face layout (full weights, or the PEFT adapter with
//!   LoRA), for use outside the trainer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use gigpo_model::{AdamW, Policy, SaveMode};
use serde::{Deserialize, Serialize};

use crate::checks::at_least_one;
use crate::error::{Result, TrainError};
use crate::fsutil::{write_atomic, write_dir_atomic};

/// Checkpoints under `run_dir/checkpoints/iter-N/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write one every this many iterations (and always after the last); 0 = only at the end.
    /// Default 20.
    pub every: usize,
    /// Keep the last this many. Default 2.
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self { every: 20, keep: 2 }
    }
}

impl CheckpointConfig {
    /// Checks ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        at_least_one("checkpoint.keep", self.keep)
    }
}

/// What `state.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Iterations completed (the checkpoint's N).
    pub iteration: usize,
    /// Environment steps collected for training so far.
    pub env_steps: u64,
    /// The run's base seed.
    pub seed: u64,
    /// How the random streams are derived (documentation for readers of the file).
    pub rng: String,
}

/// The description stored in `state.json`'s `rng` field.
pub const RNG_DERIVATION: &str = "stateless: iteration i draws training levels from SeedSplit(seed).train(k), \
sampling seeds from mix_seed(seed ^ SAMPLE_STREAM, i) and mini-batch shuffles from ChaCha8(mix_seed(seed ^ SHUFFLE_STREAM, i)); \
evaluation uses SeedSplit(seed).eval(k)";

/// The directory of the checkpoint after `iteration` iterations.
pub fn checkpoint_dir(run_dir: &Path, iteration: usize) -> PathBuf {
    run_dir
        .join("checkpoints")
        .join(format!("iter-{iteration}"))
}

/// Writes a checkpoint atomically (`config` is the run's configuration as TOML) and removes
/// all but the newest `keep`.
pub fn save(
    run_dir: &Path,
    config: &str,
    policy: &Policy,
    opt: &AdamW,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    let dir = checkpoint_dir(run_dir, state.iteration);
    let parent = run_dir.join("checkpoints");
    std::fs::create_dir_all(&parent).map_err(|e| TrainError::io(&parent, e))?;
    write_dir_atomic(&dir, |tmp| {
        let map: HashMap<String, Tensor> = policy
            .named_trainable_vars()
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().to_dtype(DType::F32)?)))
            .collect::<Result<_>>()?;
        gigpo_model::write_safetensors(&map, &tmp.join("trainable.safetensors"))?;
        opt.save_state(&tmp.join("optimizer.safetensors"))?;
        let json = serde_json::to_string_pretty(state).map_err(|e| TrainError::io(tmp, e))?;
        write_atomic(&tmp.join("state.json"), json.as_bytes())?;
        write_atomic(&tmp.join("config.toml"), config.as_bytes())?;
        let mode = if policy.lora_config().is_some() {
            SaveMode::AdapterOnly
        } else {
            SaveMode::Full
        };
        policy.save(&tmp.join("model"), mode)?;
        Ok(())
    })?;
    prune(run_dir, keep)?;
    Ok(dir)
}

/// Removes what killed writes left in the run directory and in its `checkpoints/` (see
/// [`gigpo_model::atomic::remove_stale_temporaries`]).
pub fn remove_stale_temporaries(run_dir: &Path) {
    for dir in [run_dir.to_path_buf(), run_dir.join("checkpoints")] {
        gigpo_model::atomic::remove_stale_temporaries(&dir);
    }
}

/// Checkpoints of a run, oldest first, as (iteration, directory).
pub fn list(run_dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let root = run_dir.join("checkpoints");
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root).map_err(|e| TrainError::io(&root, e))? {
        let entry = entry.map_err(|e| TrainError::io(&root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("iter-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            if entry.path().join("state.json").is_file() {
                out.push((n, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn prune(run_dir: &Path, keep: usize) -> Result<()> {
    let all = list(run_dir)?;
    let extra = all.len().saturating_sub(keep);
    for (_, dir) in &all[..extra] {
        std::fs::remove_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    }
    Ok(())
}

/// Reads `state.json` of a checkpoint.
pub fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path,
        message: e.to_string(),
    })
}

/// Checks that `state.json` of checkpoint `iter-n` says `n` iterations, and that the run,
/// configured for `iterations`, has not gone past them.
pub fn check_iteration(dir: &Path, n: usize, state: &TrainState, iterations: usize) -> Result<()> {
    let fail = |message: String| TrainError::Checkpoint {
        path: dir.join("state.json"),
        message,
    };
    if state.iteration != n {
        return Err(fail(format!(
            "`iteration` is {}, but the checkpoint is iter-{n}",
            state.iteration
        )));
    }
    if n > iterations {
        return Err(fail(format!(
            "{n} iterations are done, more than the run's `iterations` = {iterations}; \
             give at least {n} to resume"
        )));
    }
    Ok(())
}

/// Overwrites the policy's trainable variables with the checkpoint's; names and shapes must
/// match.
pub fn load_trainable(dir: &Path, policy: &Policy) -> Result<()> {
    let path = dir.join("trainable.safetensors");
    if !path.is_file() {
        return Err(TrainError::Checkpoint {
            path,
            message: "missing".into(),
        });
    }
    let map = gigpo_model::read_safetensors(&path, policy.device())?;
    for (name, var) in policy.named_trainable_vars() {
        let t = map.get(name).ok_or_else(|| TrainError::Checkpoint {
            path: path.clone(),
            message: format!(
                "no tensor {name} (was the checkpoint written with another model or LoRA setting?)"
            ),
        })?;
        if t.dims() != var.dims() {
            return Err(TrainError::Checkpoint {
                path: path.clone(),
                message: format!(
                    "{name} has shape {:?}, the model {:?}",
                    t.dims(),
                    var.dims()
                ),
            });
        }
        gigpo_model::check_finite(t, name, &path)?;
        var.set(t)?;
    }
    Ok(())
}
