//! The one typed training configuration (SPEC §6), read from TOML, overridable field by field.
//!
//! Every field has a default; `TrainConfig::default()` is the configuration `gigpo train` runs
//! with no arguments (the tiny built-in model on 6×6 Sokoban with GiGPO). A file only needs the
//! fields it changes:
//!
//! ```toml
//! iterations = 40
//! [rollout]
//! num_generations = 8
//! [algorithm]
//! estimator = "grpo"
//! ```
//!
//! Any field can be overridden by its dotted path ([`TrainConfig::set`]); the value is read as a
//! TOML value, or as a string when it is not one:
//!
//! ```
//! use gigpo_train::config::TrainConfig;
//! let mut cfg = TrainConfig::default();
//! cfg.set("rollout.num_generations", "4").unwrap();
//! cfg.set("algorithm.estimator", "rloo").unwrap();
//! assert_eq!(cfg.rollout.num_generations, 4);
//! assert!(cfg.set("rollout.num_generation", "4").unwrap_err().to_string().contains("num_generation"));
//! ```

use std::path::{Path, PathBuf};

use gigpo_core::AdvantageConfig;
use gigpo_env::action::ActionFormat;
use gigpo_env::sokoban::SokobanConfig;
use gigpo_env::spec::EnvSpec;
use gigpo_model::{DeviceChoice, LoraConfig, TinyConfig, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::context;
use crate::error::{Result, TrainError};
use crate::prompt::{HistoryAction, PromptStyle};
use crate::sft::{SftConfig, SCRATCH_SFT_LEVELS};
use crate::vllm::{check_endpoints, VllmConfig};

/// The whole training configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Base seed of everything random: model initialisation, level seeds, sampling. Default 0.
    pub seed: u64,
    /// Training iterations (rollout → advantages → update); 0 with a warm start stops after
    /// it. Default 60.
    pub iterations: usize,
    /// Where metrics, TensorBoard events, checkpoints and plots go. Default `runs/gigpo`.
    pub run_dir: PathBuf,
    /// Stop after the iteration that brings the training environment steps to at least this
    /// many (for comparisons at an equal budget). Default none: `iterations` decides.
    pub env_step_budget: Option<u64>,
    /// Train through an environment (the only mode; GiGPO needs environment states). Accepted
    /// for compatibility with the `--use_gym_env true` flag; `false` is an error. Default true.
    pub use_gym_env: bool,
    /// The policy model.
    pub model: ModelSection,
    /// The environment (a table with `kind` and that environment's fields). Default: Sokoban
    /// 6×6 with one box, at most 15 steps, bare action words accepted.
    pub env: EnvSpec,
    /// How rollouts are collected.
    pub rollout: RolloutConfig,
    /// The advantage computation (SPEC §1): `estimator`, `gamma`, `step_advantage_weight`, ...
    pub algorithm: AdvantageConfig,
    /// The policy loss (SPEC §3).
    pub loss: LossConfig,
    /// AdamW.
    pub optim: OptimConfig,
    /// PPO epochs and mini-batches.
    pub update: UpdateConfig,
    /// How steps become training sequences (SPEC §2). Default `step`.
    pub sample_layout: SampleLayout,
    /// Warm start on solver demonstrations before RL. Default by profile: on for the tiny model
    /// on the built-in Sokoban, off otherwise.
    pub sft: SftConfig,
    /// Evaluation on held-out levels.
    pub eval: EvalConfig,
    /// Checkpoints.
    pub checkpoint: CheckpointConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            iterations: 60,
            run_dir: PathBuf::from("runs/gigpo"),
            env_step_budget: None,
            use_gym_env: true,
            model: ModelSection::default(),
            env: EnvSpec::Sokoban(SokobanConfig {
                action_format: ActionFormat::TaggedOrBare,
                ..SokobanConfig::default()
            }),
            rollout: RolloutConfig::default(),
            algorithm: AdvantageConfig::default(),
            loss: LossConfig::default(),
            optim: OptimConfig::default(),
            update: UpdateConfig::default(),
            sample_layout: SampleLayout::Step,
            sft: SftConfig::default(),
            eval: EvalConfig::default(),
            checkpoint: CheckpointConfig::default(),
        }
    }
}

/// RL learning rate of the `scratch` profile after a warm start: measured on the default run's
/// warm start, 1e-4 in mini-batches of 64 lowers held-out greedy success by 0.15 within 20
/// iterations; 1e-5 keeps it.
const SCRATCH_LR_AFTER_SFT: f64 = 1e-5;

/// Which model is trained and on what device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face model directory (Qwen2 / Llama). Default none: the tiny built-in model.
    pub path: Option<PathBuf>,
    /// Sizes of the tiny built-in model (used when `path` is not set). Default: width 64,
    /// 2 layers, 2 heads, MLP 256, init std 0.02, and `max_position_embeddings = 0`: the
    /// context sized for the longest sequence of the configured episode
    /// ([`TrainConfig::tiny_config`]; 1024 for the step layout, 2048 for the trajectory layout
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
    /// A pretrained (instruct) model: SPEC defaults, LoRA, a KL penalty to the base model.
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

/// Rollout collection and sampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutConfig {
    /// Episode groups per iteration; each group's members start from one level. Default 8.
    pub groups: usize,
    /// Trajectories per group (the group size N, `--num_generations`). Default 8.
    pub num_generations: usize,
    /// Most steps of an episode; longer ones are cut off (truncated). Default 15.
    pub max_steps: usize,
    /// Observation/action pairs of the past shown in each prompt (SPEC §2). Default: 2 for a
    /// model loaded from `model.path` (SPEC §2); 0 for the tiny built-in model, for which
    /// the current observation is the whole state and history would triple the prompt.
    pub history_length: Option<usize>,
    /// What the history shows of each past action: `parsed` (the action the answer names,
    /// default) or `text` (the whole generated text with its reasoning).
    pub history_action: HistoryAction,
    /// Put the environment's instructions at the top of every prompt. Default: on for a model
    /// loaded from `model.path`, off for the tiny built-in model (which cannot read them; they
    /// would only cost compute).
    pub instructions: Option<bool>,
    /// Sampling temperature. Default 1.0.
    pub temperature: f64,
    /// Nucleus sampling threshold (1.0 = off). Default 1.0.
    pub top_p: f64,
    /// Keep only the k most likely tokens (0 = off). Default 0.
    pub top_k: usize,
    /// Most tokens generated per action. Default: 256 for a model loaded from `model.path`;
    /// 1 for the tiny built-in model, whose action words (`up`, `left`, ...) are single tokens
    /// of its vocabulary, so one token is a complete bare-word action.
    pub max_new_tokens: Option<usize>,
    /// Draw training levels from a fixed pool of this many training seeds instead of fresh
    /// ones every iteration. Default none (fresh levels).
    pub train_levels: Option<usize>,
    /// What samples the actions of rollouts and evaluations: `candle` (the policy in this
    /// process, the default) or `vllm` (vLLM servers at `endpoints`; docs/vllm.md).
    pub backend: RolloutBackend,
    /// The vLLM servers (`["http://host:port", …]`); requests are spread over all of them.
    /// Only with `backend = "vllm"`. Default none.
    pub endpoints: Vec<String>,
    /// Settings of the vLLM backend.
    pub vllm: VllmConfig,
}

/// What samples the actions (`rollout.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutBackend {
    /// The policy in the trainer's process.
    #[default]
    Candle,
    /// vLLM servers that load the trained LoRA adapter after every update.
    Vllm,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            groups: 8,
            num_generations: 8,
            max_steps: 15,
            history_length: None,
            history_action: HistoryAction::Parsed,
            instructions: None,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: None,
            train_levels: None,
            backend: RolloutBackend::Candle,
            endpoints: Vec::new(),
            vllm: VllmConfig::default(),
        }
    }
}

/// The KL estimator of SPEC §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimator {
    /// `log π − log π_ref`.
    K1,
    /// `½ (log π − log π_ref)²`.
    K2,
    /// `exp(log π_ref − log π) − (log π_ref − log π) − 1`, clamped (alias `low_var_kl`).
    #[default]
    #[serde(alias = "low_var_kl")]
    K3,
}

/// How per-token losses are reduced to one number (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// Mean over all unmasked tokens of the mini-batch.
    #[default]
    TokenMean,
    /// Sum over each sequence's tokens, mean over sequences.
    SeqMeanTokenSum,
    /// Mean over each sequence's tokens, mean over sequences.
    SeqMeanTokenMean,
}

/// The policy loss (SPEC §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// ε_low: the ratio is clipped below at 1 − ε_low. Default 0.2.
    pub clip_low: f64,
    /// ε_high: the ratio is clipped above at 1 + ε_high. Default 0.2.
    pub clip_high: f64,
    /// Dual clip constant c (> 1) bounding the loss of negative-advantage tokens at −c·A.
    /// Default 3.0; none turns it off.
    pub dual_clip: Option<f64>,
    /// KL coefficient β (`--beta`); 0 skips the reference policy. Default by profile: 0.01
    /// for a pretrained model, 0 for a model trained from scratch (its initial policy is noise).
    pub beta: Option<f64>,
    /// KL estimator. Default `k3` (`low_var_kl`).
    pub kl_estimator: KlEstimator,
    /// The k3 estimate is clamped to ±this. Default 10.
    pub kl_clamp: f64,
    /// Entropy bonus coefficient (subtracted from the loss). Default 0.
    pub entropy_coef: f64,
    /// Reduction over tokens. Default `token-mean`.
    pub aggregation: Aggregation,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: Some(3.0),
            beta: None,
            kl_estimator: KlEstimator::K3,
            kl_clamp: 10.0,
            entropy_coef: 0.0,
            aggregation: Aggregation::TokenMean,
        }
    }
}

/// AdamW (PyTorch semantics) with global gradient-norm clipping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Learning rate of the RL updates. Default by profile: from scratch 3e-3, or 1e-5 after a
    /// warm start (`sft.levels` > 0; a larger step undoes what the warm start taught); 1e-4 for
    /// a pretrained model with LoRA, 1e-6 with full fine-tuning.
    pub lr: Option<f64>,
    /// Decoupled weight decay. Default 0.0.
    pub weight_decay: f64,
    /// β₁. Default 0.9.
    pub beta1: f64,
    /// β₂. Default 0.999.
    pub beta2: f64,
    /// ε. Default 1e-8.
    pub eps: f64,
    /// Global gradient-norm clip (none = off). Default 1.0.
    pub max_grad_norm: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: None,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: Some(1.0),
        }
    }
}

/// Passes over the collected samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateConfig {
    /// Passes over the samples of one iteration. Default 1.
    pub ppo_epochs: usize,
    /// Samples per mini-batch (one optimizer step each); 0 = the whole batch. Default 64.
    pub mini_batch_size: usize,
    /// Samples per forward/backward pass; gradients of the micro-batches of a mini-batch are
    /// summed before the step (bounds memory, does not change the result). Default by
    /// profile: 64 from scratch, 4 for a pretrained model.
    pub micro_batch_size: Option<usize>,
    /// Where log π_old comes from. Default `recompute` (then `train/logprob_mismatch` watches
    /// the sampler); `sampling` saves a forward pass.
    pub old_logprobs: Option<OldLogprobs>,
    /// Recompute each layer's activations during the backward pass instead of keeping them
    /// (about one more forward pass, a fraction of the memory). Default by profile: on for a
    /// pretrained model, off from scratch.
    pub recompute_activations: Option<bool>,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            ppo_epochs: 1,
            mini_batch_size: 64,
            micro_batch_size: None,
            old_logprobs: None,
            recompute_activations: None,
        }
    }
}

/// The source of log π_old in the ratio ρ (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OldLogprobs {
    /// Score every sample with the policy before the first update (no gradient).
    #[default]
    Recompute,
    /// Use the log-probabilities recorded while sampling (the same policy, one forward pass
    /// fewer; `step` layout only, where the context is the sampling prompt).
    Sampling,
}

/// How steps become training sequences (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleLayout {
    /// One sample per environment step: its prompt and its response; every response token
    /// gets A_t.
    #[default]
    Step,
    /// One sequence per trajectory; assistant tokens of turn t get A_t, the rest is masked.
    Trajectory,
}

/// Evaluation on held-out levels (SPEC §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate before the first update and every this many iterations (and after the last);
    /// 0 = never. Default 20.
    pub every: usize,
    /// Held-out levels: the first this many evaluation seeds; training never resets to one of
    /// their levels (compared by content). Every evaluation plays each once. Default 256.
    pub levels: usize,
    /// Temperature of the sampled evaluation. Default 1.0.
    pub temperature: f64,
    /// Nucleus threshold of the sampled evaluation (1.0 = off). Default 1.0.
    pub top_p: f64,
    /// Top-k of the sampled evaluation (0 = off). Default 0.
    pub top_k: usize,
    /// Also play every level greedily (temperature 0). Default true.
    pub greedy: bool,
    /// Episodes of the random baseline per level. Default 32.
    pub random_rollouts: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every: 20,
            levels: 256,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            greedy: true,
            random_rollouts: 32,
        }
    }
}

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

/// The seed page's flags and the dotted field each one sets (SPEC §6).
pub const SEED_FLAGS: [(&str, &str); 5] = [
    ("advantage_estimator", "algorithm.estimator"),
    ("use_gym_env", "use_gym_env"),
    (
        "gigpo_step_advantage_weight",
        "algorithm.step_advantage_weight",
    ),
    ("num_generations", "rollout.num_generations"),
    ("beta", "loss.beta"),
];

impl TrainConfig {
    /// Reads a TOML file; unknown fields are errors naming the field and line.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::from_toml(&text).map_err(|e| match e {
            TrainError::ConfigFile { message, .. } => TrainError::ConfigFile {
                path: path.into(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| TrainError::ConfigFile {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        Ok(cfg)
    }

    /// The configuration as TOML text.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| TrainError::config("<all>", e.to_string()))
    }

    /// Sets the field at the dotted `path` (`rollout.num_generations`) to `value`, read as a
    /// TOML value (`4`, `1e-3`, `true`, `"text"`, `[6, 6]`) or else as a string.
    pub fn set(&mut self, path: &str, value: &str) -> Result<()> {
        let mut doc =
            toml::Value::try_from(&*self).map_err(|e| TrainError::config(path, e.to_string()))?;
        let parsed = parse_value(value);
        let keys: Vec<&str> = path.split('.').collect();
        if keys.iter().any(|k| k.is_empty()) {
            return Err(TrainError::config(path, "not a dotted field path"));
        }
        let mut node = &mut doc;
        for key in &keys[..keys.len() - 1] {
            let table = node.as_table_mut().ok_or_else(|| {
                TrainError::config(path, format!("`{key}` is not inside a table"))
            })?;
            node = table
                .entry(key.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()));
        }
        let table = node
            .as_table_mut()
            .ok_or_else(|| TrainError::config(path, "the parent is not a table"))?;
        table.insert(keys[keys.len() - 1].to_string(), parsed);
        *self = doc
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::config(path, e.message().to_string()))?;
        Ok(())
    }

    /// Replaces the environment by a built-in one with its defaults (`--env sokoban`).
    pub fn set_env(&mut self, name: &str) -> Result<()> {
        let mut spec: EnvSpec = name
            .parse()
            .map_err(|e: gigpo_env::EnvError| TrainError::config("env", e.to_string()))?;
        if let EnvSpec::Sokoban(c) = &mut spec {
            c.action_format = ActionFormat::TaggedOrBare;
        }
        self.env = spec;
        Ok(())
    }

    /// `model.profile` resolved: `pretrained` when a model path is set.
    pub fn profile(&self) -> Profile {
        self.model.profile.unwrap_or(if self.model.path.is_some() {
            Profile::Pretrained
        } else {
            Profile::Scratch
        })
    }

    fn pretrained(&self) -> bool {
        self.profile() == Profile::Pretrained
    }

    /// `model.finetune` resolved: LoRA when its settings are given or the model is pretrained.
    pub fn finetune(&self) -> Finetune {
        self.model
            .finetune
            .unwrap_or(if self.model.lora.is_some() || self.pretrained() {
                Finetune::Lora
            } else {
                Finetune::Full
            })
    }

    /// The LoRA adapter to add, when `finetune` is `lora`.
    pub fn lora(&self) -> Option<LoraConfig> {
        (self.finetune() == Finetune::Lora).then(|| self.model.lora.clone().unwrap_or_default())
    }

    /// `model.tiny` resolved: `max_position_embeddings = 0` becomes the longest sequence of an
    /// episode of this configuration (measured by rendering its last prompt with the tiny
    /// tokenizer, `crate::context`), rounded up to a multiple of 256 and at least 1024. A
    /// remote environment is not started for this: it gets 1024.
    pub fn tiny_config(&self) -> Result<TinyConfig> {
        let mut tiny = self.model.tiny.clone();
        if tiny.max_position_embeddings == 0 {
            let tokens = context::episode_tokens(self, &Tokenizer::tiny()?)?;
            tiny.max_position_embeddings = context::sized_context(tokens.unwrap_or(0));
        }
        Ok(tiny)
    }

    /// `rollout.max_new_tokens` resolved.
    pub fn max_new_tokens(&self) -> usize {
        self.rollout
            .max_new_tokens
            .unwrap_or(if self.pretrained() { 256 } else { 1 })
    }

    /// `update.old_logprobs` resolved.
    pub fn old_logprobs(&self) -> OldLogprobs {
        self.update.old_logprobs.unwrap_or(OldLogprobs::Recompute)
    }

    /// `rollout.history_length` resolved.
    pub fn history_length(&self) -> usize {
        self.rollout
            .history_length
            .unwrap_or(if self.pretrained() { 2 } else { 0 })
    }

    /// `rollout.instructions` resolved.
    pub fn instructions(&self) -> bool {
        self.rollout.instructions.unwrap_or(self.pretrained())
    }

    /// `loss.beta` resolved.
    pub fn beta(&self) -> f64 {
        self.loss
            .beta
            .unwrap_or(if self.pretrained() { 0.01 } else { 0.0 })
    }

    /// `optim.lr` resolved.
    pub fn lr(&self) -> f64 {
        self.optim
            .lr
            .unwrap_or(match (self.profile(), self.finetune()) {
                (Profile::Scratch, _) if self.sft_levels() > 0 => SCRATCH_LR_AFTER_SFT,
                (Profile::Scratch, _) => 3e-3,
                (Profile::Pretrained, Finetune::Lora) => 1e-4,
                (Profile::Pretrained, Finetune::Full) => 1e-6,
            })
    }

    /// `sft.levels` resolved: the tiny model trained from scratch on the built-in Sokoban starts
    /// from a warm start on the solver's demonstrations; other setups start RL directly.
    pub fn sft_levels(&self) -> usize {
        self.sft.levels.unwrap_or(
            if !self.pretrained() && matches!(self.env, EnvSpec::Sokoban(_)) {
                SCRATCH_SFT_LEVELS
            } else {
                0
            },
        )
    }

    /// `update.micro_batch_size` resolved.
    pub fn micro_batch_size(&self) -> usize {
        self.update
            .micro_batch_size
            .unwrap_or(if self.pretrained() { 4 } else { 64 })
    }

    /// `update.recompute_activations` resolved.
    pub fn recompute_activations(&self) -> bool {
        self.update
            .recompute_activations
            .unwrap_or(self.pretrained())
    }

    /// How rollouts build prompts: the running chat with the trajectory layout, single-turn
    /// prompts with a history window with the step layout.
    pub fn prompt_style(&self) -> PromptStyle {
        PromptStyle {
            chat: self.sample_layout == SampleLayout::Trajectory,
            history_length: self.history_length(),
            history_action: self.rollout.history_action,
            instructions: self.instructions(),
        }
    }

    /// The configuration with every model-dependent default written out (what `--print-config`
    /// shows and the run directory records). The tiny model's context is sized only when it
    /// is the model trained.
    pub fn resolved(&self) -> Result<Self> {
        let mut c = self.clone();
        if self.model.path.is_none() {
            c.model.tiny = self.tiny_config()?;
        }
        c.model.profile = Some(self.profile());
        c.model.finetune = Some(self.finetune());
        c.model.lora = self.lora().or(c.model.lora);
        c.rollout.max_new_tokens = Some(self.max_new_tokens());
        c.rollout.history_length = Some(self.history_length());
        c.rollout.instructions = Some(self.instructions());
        c.loss.beta = Some(self.beta());
        c.optim.lr = Some(self.lr());
        c.sft.levels = Some(self.sft_levels());
        c.update.micro_batch_size = Some(self.micro_batch_size());
        c.update.old_logprobs = Some(self.old_logprobs());
        c.update.recompute_activations = Some(self.recompute_activations());
        Ok(c)
    }

    /// The loss settings with β resolved.
    pub fn loss_config(&self) -> LossConfig {
        LossConfig {
            beta: Some(self.beta()),
            ..self.loss.clone()
        }
    }

    /// Checks ranges and combinations, naming the field that is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.iterations == 0 && self.sft_levels() == 0 {
            return Err(TrainError::config(
                "iterations",
                "must be at least 1 (0 is allowed only with a warm start: sft.levels > 0)",
            ));
        }
        let positive = [
            ("rollout.groups", self.rollout.groups),
            ("rollout.num_generations", self.rollout.num_generations),
            ("rollout.max_steps", self.rollout.max_steps),
            ("rollout.max_new_tokens", self.max_new_tokens()),
            ("update.ppo_epochs", self.update.ppo_epochs),
            ("update.micro_batch_size", self.micro_batch_size()),
            ("eval.levels", self.eval.levels),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(TrainError::config(field, "must be at least 1"));
            }
        }
        self.check_size_limits()?;
        if !self.use_gym_env {
            return Err(TrainError::config(
                "use_gym_env",
                "false is not supported: training runs through an environment (GiGPO needs its states)",
            ));
        }
        if self.rollout.train_levels == Some(0) {
            return Err(TrainError::config(
                "rollout.train_levels",
                "must be at least 1 when set",
            ));
        }
        let l = &self.loss;
        for (field, v) in [
            ("loss.clip_low", l.clip_low),
            ("loss.clip_high", l.clip_high),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(TrainError::config(
                    field,
                    format!("{v} must be finite and >= 0"),
                ));
            }
        }
        if l.clip_low >= 1.0 {
            return Err(TrainError::config("loss.clip_low", "must be < 1"));
        }
        if let Some(c) = l.dual_clip {
            if !(c > 1.0 && c.is_finite()) {
                return Err(TrainError::config(
                    "loss.dual_clip",
                    format!("{c} must be > 1"),
                ));
            }
        }
        for (field, v) in [
            ("loss.beta", self.beta()),
            ("loss.entropy_coef", l.entropy_coef),
            ("loss.kl_clamp", l.kl_clamp),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(TrainError::config(
                    field,
                    format!("{v} must be finite and >= 0"),
                ));
            }
        }
        let o = &self.optim;
        if !(self.lr() > 0.0 && self.lr().is_finite()) {
            return Err(TrainError::config(
                "optim.lr",
                format!("{} must be > 0", self.lr()),
            ));
        }
        for (field, p) in [
            ("rollout.top_p", self.rollout.top_p),
            ("eval.top_p", self.eval.top_p),
        ] {
            if !(p > 0.0 && p <= 1.0) {
                return Err(TrainError::config(field, format!("{p} must be in (0, 1]")));
            }
        }
        if self.finetune() == Finetune::Full && self.model.lora.is_some() {
            return Err(TrainError::config(
                "model.finetune",
                "`full` with [model.lora] settings: choose one",
            ));
        }
        self.sft.validate(self.sft_levels())?;
        for (field, v) in [("optim.beta1", o.beta1), ("optim.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(TrainError::config(field, format!("{v} must be in [0, 1)")));
            }
        }
        if let Some(g) = o.max_grad_norm {
            if g.is_nan() || g <= 0.0 {
                return Err(TrainError::config(
                    "optim.max_grad_norm",
                    format!("{g} must be > 0"),
                ));
            }
        }
        for (field, t) in [
            ("rollout.temperature", self.rollout.temperature),
            ("eval.temperature", self.eval.temperature),
        ] {
            if t.is_nan() || t < 0.0 {
                return Err(TrainError::config(field, format!("{t} must be >= 0")));
            }
        }
        self.algorithm
            .validate()
            .map_err(|e| TrainError::config("algorithm", e.to_string()))?;
        if self.checkpoint.keep == 0 {
            return Err(TrainError::config("checkpoint.keep", "must be at least 1"));
        }
        self.check_backend()
    }

    /// The combinations the rollout backend allows.
    fn check_backend(&self) -> Result<()> {
        let r = &self.rollout;
        if r.backend == RolloutBackend::Candle {
            if !r.endpoints.is_empty() {
                return Err(TrainError::config(
                    "rollout.endpoints",
                    "servers are only used with rollout.backend = \"vllm\"",
                ));
            }
            return Ok(());
        }
        check_endpoints(&r.endpoints)?;
        r.vllm.validate()?;
        if self.model.path.is_none() {
            return Err(TrainError::config(
                "rollout.backend",
                "\"vllm\" needs model.path (--model DIR): the servers must serve the model the trainer trains",
            ));
        }
        if self.finetune() == Finetune::Full {
            return Err(TrainError::config(
                "model.finetune",
                "\"full\" is not supported with rollout.backend = \"vllm\": the servers follow training through a LoRA adapter loaded after every update; use model.finetune = \"lora\"",
            ));
        }
        if self.old_logprobs() == OldLogprobs::Sampling {
            return Err(TrainError::config(
                "update.old_logprobs",
                "\"sampling\" is not supported with rollout.backend = \"vllm\": the servers' log-probabilities are not the trainer's; use \"recompute\" (train/logprob_mismatch then compares them)",
            ));
        }
        Ok(())
    }
}

/// The most episodes one iteration may play (`rollout.groups × rollout.num_generations`), and
/// the most held-out levels, environment steps per episode and warm-start levels: far beyond
/// any useful run, and small enough that the environments and buffers for them fit in memory.
pub const MAX_EPISODES: usize = 1 << 16;
/// The most tokens one reply may have (`rollout.max_new_tokens`).
pub const MAX_REPLY_TOKENS: usize = gigpo_model::MAX_TOKENS;
/// The most warm-start levels (`sft.levels`).
pub const MAX_SFT_LEVELS: usize = 1 << 20;

impl TrainConfig {
    /// Sizes that allocate in proportion: checked before anything is allocated, so that an
    /// absurd value is an error naming the field instead of an aborted process.
    fn check_size_limits(&self) -> Result<()> {
        let r = &self.rollout;
        let episodes = r.groups.saturating_mul(r.num_generations);
        if episodes > MAX_EPISODES {
            return Err(TrainError::config(
                "rollout.groups",
                format!(
                    "{} groups × {} generations = {episodes} episodes per iteration; at most {MAX_EPISODES}",
                    r.groups, r.num_generations
                ),
            ));
        }
        let limits = [
            ("rollout.max_steps", r.max_steps, MAX_EPISODES),
            ("eval.levels", self.eval.levels, MAX_EPISODES),
            (
                "rollout.max_new_tokens",
                self.max_new_tokens(),
                MAX_REPLY_TOKENS,
            ),
            ("sft.levels", self.sft_levels(), MAX_SFT_LEVELS),
        ];
        for (field, value, limit) in limits {
            if value > limit {
                return Err(TrainError::config(
                    field,
                    format!("{value} is too large; at most {limit}"),
                ));
            }
        }
        Ok(())
    }
}

fn parse_value(text: &str) -> toml::Value {
    let doc = format!("v = {text}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.to_string())),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gigpo_core::Estimator;

    #[test]
    fn default_round_trips_through_toml() {
        let cfg = TrainConfig::default();
        let text = cfg.to_toml().unwrap();
        assert_eq!(TrainConfig::from_toml(&text).unwrap(), cfg);
        cfg.validate().unwrap();
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let cfg = TrainConfig::from_toml(
            "iterations = 3\n[rollout]\ngroups = 2\n[algorithm]\nestimator = \"grpo\"\n",
        )
        .unwrap();
        assert_eq!(cfg.iterations, 3);
        assert_eq!(cfg.rollout.groups, 2);
        assert_eq!(
            cfg.rollout.num_generations,
            RolloutConfig::default().num_generations
        );
        assert_eq!(cfg.algorithm.estimator, Estimator::Grpo);
    }

    #[test]
    fn absurd_sizes_name_the_field() {
        for (field, value) in [
            ("rollout.groups", "1000000"),
            ("rollout.max_steps", "1000000000"),
            ("eval.levels", "100000000"),
            ("rollout.max_new_tokens", "1000000000000"),
            ("sft.levels", "1000000000"),
        ] {
            let mut cfg = TrainConfig::default();
            cfg.set(field, value).unwrap();
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn unknown_field_is_named() {
        let e = TrainConfig::from_toml("[rollout]\ngroup = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("group") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn set_reaches_every_kind_of_field() {
        let mut cfg = TrainConfig::default();
        cfg.set("loss.kl_estimator", "low_var_kl").unwrap();
        assert_eq!(cfg.loss.kl_estimator, KlEstimator::K3);
        cfg.set("loss.aggregation", "seq-mean-token-sum").unwrap();
        assert_eq!(cfg.loss.aggregation, Aggregation::SeqMeanTokenSum);
        cfg.set("optim.lr", "3e-4").unwrap();
        assert_eq!(cfg.lr(), 3e-4);
        cfg.set("model.lora.rank", "4").unwrap();
        assert_eq!(cfg.model.lora.as_ref().unwrap().rank, 4);
        cfg.set("env.dim_room", "[7, 7]").unwrap();
        let EnvSpec::Sokoban(s) = &cfg.env else {
            panic!()
        };
        assert_eq!(s.dim_room, [7, 7]);
        cfg.set("run_dir", "/tmp/x y").unwrap();
        assert_eq!(cfg.run_dir, PathBuf::from("/tmp/x y"));
        cfg.set("sample_layout", "trajectory").unwrap();
        assert_eq!(cfg.sample_layout, SampleLayout::Trajectory);
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut cfg = TrainConfig::default();
        let e = cfg.set("rollout.groups", "many").unwrap_err().to_string();
        assert!(e.contains("rollout.groups"), "{e}");
        let e = cfg
            .set("algorithm.estimator", "ppo")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ppo"), "{e}");
        cfg.rollout.groups = 0;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("rollout.groups"));
        let mut cfg = TrainConfig::default();
        cfg.set("use_gym_env", "false").unwrap();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("use_gym_env"));
    }

    #[test]
    fn seed_flags_map_to_fields() {
        let mut cfg = TrainConfig::default();
        for ((_, path), value) in SEED_FLAGS.iter().zip(["rloo", "true", "0.5", "4", "0.0"]) {
            cfg.set(path, value).unwrap();
        }
        assert_eq!(cfg.algorithm.estimator, Estimator::Rloo);
        assert_eq!(cfg.algorithm.step_advantage_weight, 0.5);
        assert_eq!(cfg.rollout.num_generations, 4);
        assert_eq!(cfg.beta(), 0.0);
    }

    #[test]
    fn profiles_resolve_the_model_dependent_defaults() {
        let tiny = TrainConfig::default().resolved().unwrap();
        assert_eq!(tiny.model.profile, Some(Profile::Scratch));
        assert_eq!(tiny.model.finetune, Some(Finetune::Full));
        assert_eq!(tiny.loss.beta, Some(0.0));
        assert_eq!(tiny.rollout.max_new_tokens, Some(1));
        // The tiny model's context is sized for the episode, at least 1024 tokens.
        assert_eq!(TrainConfig::default().model.tiny.max_position_embeddings, 0);
        assert_eq!(tiny.model.tiny.max_position_embeddings, 1024);
        // The default run warm-starts on solver demonstrations, then RL at a smaller step.
        assert_eq!(tiny.sft.levels, Some(SCRATCH_SFT_LEVELS));
        assert_eq!(tiny.optim.lr, Some(SCRATCH_LR_AFTER_SFT));
        let mut rl_only = TrainConfig::default();
        rl_only.set("sft.levels", "0").unwrap();
        assert_eq!(rl_only.lr(), 3e-3);
        let mut lake = TrainConfig::default();
        lake.set_env("frozenlake").unwrap();
        assert_eq!(
            lake.sft_levels(),
            0,
            "only the built-in Sokoban has a solver"
        );
        // The tiny model's head width is one inference servers' CPU kernels accept.
        let t = &tiny.model.tiny;
        assert!([32, 64].contains(&(t.hidden_size / t.num_heads)));
        let mut cfg = TrainConfig::default();
        cfg.model.path = Some("some/model".into());
        let pre = cfg.resolved().unwrap();
        assert_eq!(pre.model.profile, Some(Profile::Pretrained));
        assert_eq!(pre.model.finetune, Some(Finetune::Lora));
        assert!(pre.model.lora.is_some());
        assert_eq!(pre.loss.beta, Some(0.01));
        assert_eq!(pre.optim.lr, Some(1e-4));
        assert_eq!(pre.update.micro_batch_size, Some(4));
        assert_eq!(pre.rollout.history_length, Some(2));
        // An explicit value wins, and the resolved file reads back to the same configuration.
        cfg.set("loss.beta", "0.05").unwrap();
        cfg.set("model.finetune", "full").unwrap();
        let r = cfg.resolved().unwrap();
        assert_eq!((r.beta(), r.lr(), r.lora()), (0.05, 1e-6, None));
        assert_eq!(TrainConfig::from_toml(&r.to_toml().unwrap()).unwrap(), r);
    }

    #[test]
    fn estimator_names_are_case_insensitive() {
        let mut cfg = TrainConfig::default();
        cfg.set("algorithm.estimator", "GRPO").unwrap();
        assert_eq!(cfg.algorithm.estimator, Estimator::Grpo);
        let cfg = TrainConfig::from_toml("[algorithm]\nestimator = \"RLoo\"\n").unwrap();
        assert_eq!(cfg.algorithm.estimator, Estimator::Rloo);
    }

    #[test]
    fn the_vllm_backend_needs_servers_a_model_directory_and_lora() {
        let mut cfg = TrainConfig::default();
        cfg.set("rollout.endpoints", r#"["http://127.0.0.1:8000"]"#)
            .unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("rollout.endpoints") && e.contains("vllm"), "{e}");
        cfg.set("rollout.backend", "vllm").unwrap();
        assert_eq!(cfg.rollout.backend, RolloutBackend::Vllm);
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("model.path"), "{e}");
        cfg.set("model.path", "some/model").unwrap();
        cfg.validate().unwrap();
        for (field, value) in [
            ("model.finetune", "full"),
            ("update.old_logprobs", "sampling"),
            ("rollout.endpoints", "[]"),
            ("rollout.endpoints", r#"["localhost:8000"]"#),
            ("rollout.vllm.concurrency", "0"),
            ("rollout.vllm.timeout_s", "0"),
            ("rollout.vllm.lora_name", r#""a b""#),
        ] {
            let mut bad = cfg.clone();
            bad.set(field, value).unwrap();
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{field} = {value}: {e}");
        }
        // The fields show in the written configuration and read back.
        let text = cfg.resolved().unwrap().to_toml().unwrap();
        assert!(
            text.contains("backend = \"vllm\"") && text.contains("[rollout.vllm]"),
            "{text}"
        );
        assert_eq!(
            TrainConfig::from_toml(&text).unwrap(),
            cfg.resolved().unwrap()
        );
    }
}
