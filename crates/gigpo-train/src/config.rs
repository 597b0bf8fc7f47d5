//! The one typed training configuration (docs/formats.md), read from TOML, overridable field
//! by field. Each section's type lives beside the code it configures and checks its own
//! fields; [`TrainConfig`] composes them and checks the combinations.
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
use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointConfig;
use crate::error::{Result, TrainError};
use crate::eval::EvalConfig;
use crate::loss::LossConfig;
use crate::profile::{Finetune, ModelSection};
use crate::rollout::{RolloutBackend, RolloutConfig};
use crate::samples::SampleLayout;
use crate::sft::SftConfig;
use crate::update::{OldLogprobs, OptimConfig, UpdateConfig};

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
    /// The advantage computation (docs/advantages.md): `estimator`, `gamma`,
    /// `step_advantage_weight`, `levels`, ...
    pub algorithm: AdvantageConfig,
    /// The policy loss (docs/training.md).
    pub loss: LossConfig,
    /// AdamW of the RL updates.
    pub optim: OptimConfig,
    /// PPO epochs and mini-batches.
    pub update: UpdateConfig,
    /// How steps become training sequences (docs/training.md). Default `step`.
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

    /// Checks ranges and combinations, naming the field that is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.iterations == 0 && self.sft_levels() == 0 {
            return Err(TrainError::config(
                "iterations",
                "must be at least 1 (0 is allowed only with a warm start: sft.levels > 0)",
            ));
        }
        if !self.use_gym_env {
            return Err(TrainError::config(
                "use_gym_env",
                "false is not supported: training runs through an environment (GiGPO needs its states)",
            ));
        }
        self.rollout.validate(self.max_new_tokens())?;
        self.update.validate(self.micro_batch_size())?;
        self.eval.validate()?;
        self.sft.validate(self.sft_levels())?;
        self.loss.validate(self.beta())?;
        self.optim.validate(self.lr())?;
        self.model.validate(self.finetune())?;
        self.algorithm
            .validate()
            .map_err(|e| TrainError::config("algorithm", e.to_string()))?;
        self.checkpoint.validate()?;
        if !self.rollout.response_prefix.is_empty()
            && self.sample_layout == SampleLayout::Trajectory
        {
            return Err(TrainError::config(
                "rollout.response_prefix",
                "is only supported with sample_layout = \"step\"",
            ));
        }
        self.check_backend()
    }

    /// The combinations the vLLM backend allows besides its own section's.
    fn check_backend(&self) -> Result<()> {
        if self.rollout.backend == RolloutBackend::Candle {
            return Ok(());
        }
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
    use crate::loss::{Aggregation, KlEstimator};
    use crate::profile::{Profile, SCRATCH_LR_AFTER_SFT};
    use crate::sft::SCRATCH_SFT_LEVELS;
    use gigpo_core::{Estimator, Levels};

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
    fn answer_shaping_fields_are_checked() {
        let mut cfg = TrainConfig::default();
        cfg.set("rollout.stop", r#"["</action>", ""]"#).unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("rollout.stop"), "{e}");
        let mut cfg = TrainConfig::default();
        cfg.set("rollout.response_prefix", r#""<action>""#).unwrap();
        cfg.set("sample_layout", "trajectory").unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("rollout.response_prefix"), "{e}");
        cfg.set("sample_layout", "step").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.eval_plan().stop, Vec::<String>::new());
        cfg.set("rollout.stop", r#"["</action>"]"#).unwrap();
        assert_eq!(cfg.eval_plan().stop, vec!["</action>".to_string()]);
        assert_eq!(cfg.sampling().stop_strings, vec!["</action>".to_string()]);
    }

    #[test]
    fn a_system_prompt_turns_the_instructions_on_and_is_checked() {
        let mut cfg = TrainConfig::default();
        assert!(
            !cfg.prompt_style().instructions,
            "the tiny model reads none"
        );
        cfg.set("rollout.system_prompt", r#""Reach the goal.""#)
            .unwrap();
        cfg.validate().unwrap();
        let style = cfg.prompt_style();
        assert_eq!(
            style.system_turn(|| unreachable!("the system prompt replaces them")),
            Some("Reach the goal.".to_string())
        );
        cfg.set("rollout.instructions", "false").unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("rollout.system_prompt"), "{e}");
        cfg.set("rollout.instructions", "true").unwrap();
        cfg.set("rollout.system_prompt", r#""  ""#).unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("rollout.system_prompt"), "{e}");
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
    fn levels_are_set_from_toml_and_overrides() {
        let cfg = TrainConfig::from_toml("[algorithm]\nlevels = \"episode\"\n").unwrap();
        assert_eq!(cfg.algorithm.levels, Levels::Episode);
        let mut cfg = TrainConfig::default();
        assert!(cfg.to_toml().unwrap().contains("levels = \"both\""));
        cfg.set("algorithm.levels", "step").unwrap();
        assert_eq!(cfg.algorithm.levels, Levels::Step);
        cfg.validate().unwrap();
        let e = cfg.set("algorithm.levels", "all").unwrap_err().to_string();
        assert!(
            e.contains("algorithm.levels") && e.contains("both, episode, step"),
            "{e}"
        );
        cfg.set("algorithm.estimator", "grpo").unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.contains("algorithm") && e.contains("levels = step"),
            "{e}"
        );
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
