//! Rollout collection and sampling settings (`[rollout]`).

use gigpo_model::SamplingParams;
use serde::{Deserialize, Serialize};

use crate::checks::{self, at_least_one, at_most};
use crate::error::{Result, TrainError};
use crate::prompt::HistoryAction;
use crate::vllm::{check_endpoints, VllmConfig};

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
    /// Observation/action pairs of the past shown in each prompt (docs/training.md). Default: 2
    /// for a model loaded from `model.path`; 0 for the tiny built-in model, for which
    /// the current observation is the whole state and history would triple the prompt.
    pub history_length: Option<usize>,
    /// What the history shows of each past action: `parsed` (the action the answer names,
    /// default) or `text` (the whole generated text with its reasoning).
    pub history_action: HistoryAction,
    /// Put the environment's instructions at the top of every prompt. Default: on for a model
    /// loaded from `model.path`, off for the tiny built-in model (which cannot read them; they
    /// would only cost compute).
    pub instructions: Option<bool>,
    /// Text of the system turn in place of the environment's instructions, e.g. a shorter
    /// task description (every token of it is scored in every sample). Setting it turns
    /// `instructions` on. Default none (the environment's instructions).
    pub system_prompt: Option<String>,
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
    /// Text every answer starts with, written at the start of the assistant turn before
    /// sampling (an assistant prefill, e.g. `"<action>"`): the model writes only what follows,
    /// and the environment reads the prefix and the generated text together. It is part of the
    /// prompt, so it is never trained. Only with `sample_layout = "step"`. Default `""` (none).
    pub response_prefix: String,
    /// Stop strings: an answer ends once its generated text contains one of them (the stop
    /// string is kept in the answer), e.g. `["</action>"]`. Default none.
    pub stop: Vec<String>,
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
            system_prompt: None,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: None,
            response_prefix: String::new(),
            stop: Vec::new(),
            train_levels: None,
            backend: RolloutBackend::Candle,
            endpoints: Vec::new(),
            vllm: VllmConfig::default(),
        }
    }
}

impl RolloutConfig {
    /// Checks ranges, naming the field; `max_new_tokens` is the resolved reply length.
    pub fn validate(&self, max_new_tokens: usize) -> Result<()> {
        at_least_one("rollout.groups", self.groups)?;
        at_least_one("rollout.num_generations", self.num_generations)?;
        at_least_one("rollout.max_steps", self.max_steps)?;
        at_least_one("rollout.max_new_tokens", max_new_tokens)?;
        let episodes = self.groups.saturating_mul(self.num_generations);
        if episodes > MAX_EPISODES {
            return Err(TrainError::config(
                "rollout.groups",
                format!(
                    "{} groups × {} generations = {episodes} episodes per iteration; at most {MAX_EPISODES}",
                    self.groups, self.num_generations
                ),
            ));
        }
        at_most("rollout.max_steps", self.max_steps, MAX_EPISODES)?;
        at_most("rollout.max_new_tokens", max_new_tokens, MAX_REPLY_TOKENS)?;
        if self.train_levels == Some(0) {
            return Err(TrainError::config(
                "rollout.train_levels",
                "must be at least 1 when set",
            ));
        }
        checks::sampling("rollout", self.temperature, self.top_p)?;
        match (&self.system_prompt, self.instructions) {
            (Some(s), _) if s.trim().is_empty() => {
                return Err(TrainError::config(
                    "rollout.system_prompt",
                    "must not be empty (leave it out for the environment's instructions)",
                ))
            }
            (Some(_), Some(false)) => {
                return Err(TrainError::config(
                    "rollout.system_prompt",
                    "is set while rollout.instructions = false",
                ))
            }
            _ => {}
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(TrainError::config(
                "rollout.stop",
                "a stop string must not be empty",
            ));
        }
        match self.backend {
            RolloutBackend::Candle if !self.endpoints.is_empty() => Err(TrainError::config(
                "rollout.endpoints",
                "servers are only used with rollout.backend = \"vllm\"",
            )),
            RolloutBackend::Candle => Ok(()),
            RolloutBackend::Vllm => {
                check_endpoints(&self.endpoints)?;
                self.vllm.validate()
            }
        }
    }

    /// The sampling parameters of training rollouts, with the resolved reply length.
    pub fn sampling(&self, max_new_tokens: usize) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            max_new_tokens,
            stop_strings: self.stop.clone(),
        }
    }
}

/// The most episodes one iteration may play (`rollout.groups × rollout.num_generations`), and
/// the most held-out levels and environment steps per episode: far beyond any useful run, and
/// small enough that the environments and buffers for them fit in memory.
pub const MAX_EPISODES: usize = 1 << 16;
/// The most tokens one reply may have (`rollout.max_new_tokens`).
pub const MAX_REPLY_TOKENS: usize = gigpo_model::MAX_TOKENS;
