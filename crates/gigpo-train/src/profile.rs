//! The model section (`[model]`): which model is trained, on what device, and
//! `model.profile`, which says whether it is trained from scratch or pretrained. The fields
//! whose defaults depend on the profile are resolved in `resolve.rs`
//! ([`crate::TrainConfig::resolved`] writes them all out).

use std::path::PathBuf;

use gigpo_model::{DeviceChoice, LoraConfig, TinyConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// RL learning rate of the `scratch` profile after a warm start: measured on the default run's
/// warm start, 1e-4 in mini-batches of 64 lowers held-out greedy success by 0.15 within 20
/// iterations; 1e-5 keeps it.
pub(crate) const SCRATCH_LR_AFTER_SFT: f64 = 1e-5;

/// Which model is trained and on what device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face model directory (Qwen2 / Llama). Default none: the tiny built-in model.
    pub path: Option<PathBuf>,
    /// Sizes of the tiny built-in model (used when `path` is not set). Default: width 64,
    /// 2 layers, 2 heads, MLP 256, init std 0.02, and `max_position_embeddings = 0`: the
    /// context sized for the longest sequence of the configured episode
    /// ([`crate::TrainConfig::tiny_config`]; 1024 for the step layout, 2048 for the trajectory layout
    /// of the default Sokoban).
    pub tiny: TinyConfig,
    /// Where the defaults of model-dependent fields come from. Default: `pretrained` when
    /// `path` is set, else `scratch`.
    pub profile: Option<Profile>,
    /// Which weights are trained. Default: `lora` for the `pretrained` profile (the reference
    /// policy is the model with the adapter off, no second copy), `full` for `scratch`.
    pub finetune: Option<Finetune>,
    /// The LoRA adapter's settings (used when `finetune = "lora"`; setting them alone turns
    /// LoRA on). Default rank 8, α 16, every projection.
    pub lora: Option<LoraConfig>,
    /// `cpu` (default), `cuda`, `cuda:N` or `{ cuda = N }` (needs a CUDA build), or `auto`:
    /// CUDA device 0 when there is one, else the CPU.
    pub device: DeviceChoice,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            path: None,
            profile: None,
            finetune: None,
            tiny: TinyConfig {
                hidden_size: 64,
                num_layers: 2,
                num_heads: 2,
                num_kv_heads: 2,
                intermediate_size: 256,
                max_position_embeddings: 0,
                ..TinyConfig::default()
            },
            lora: None,
            device: DeviceChoice::Cpu,
        }
    }
}

/// Where the defaults of the model-dependent fields come from (`model.profile`).
///
/// | field | `scratch` | `pretrained` |
/// |---|---|---|
/// | `model.finetune` | `full` | `lora` |
/// | `rollout.max_new_tokens` | 1 | 256 |
/// | `rollout.history_length` | 0 | 2 |
/// | `rollout.instructions` | false | true |
/// | `loss.beta` | 0 (no meaningful reference) | 0.01 |
/// | `optim.lr` | 1e-5 after the warm start (3e-3 without) | 1e-4 with LoRA, 1e-6 full |
/// | `sft.levels` | 32000 on the built-in Sokoban, else 0 | 0 |
/// | `update.micro_batch_size` | 64 | 4 |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// A model trained from scratch (the tiny built-in model): it cannot read instructions, an
    /// action is one token, and its initial policy is no meaningful reference.
    Scratch,
    /// A pretrained (instruct) model: the defaults of docs/training.md, LoRA, a KL penalty to the base model.
    Pretrained,
}

/// Which weights are trained (`model.finetune`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finetune {
    /// Every weight; the reference policy (when β > 0) is a frozen copy.
    Full,
    /// A LoRA adapter over frozen weights (`model.lora`).
    Lora,
}

impl ModelSection {
    /// Checks combinations, naming the field; `finetune` is the resolved one.
    pub fn validate(&self, finetune: Finetune) -> Result<()> {
        if finetune == Finetune::Full && self.lora.is_some() {
            return Err(TrainError::config(
                "model.finetune",
                "`full` with [model.lora] settings: choose one",
            ));
        }
        Ok(())
    }
}
