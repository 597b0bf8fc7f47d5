//! The GiGPO trainer: rollouts in environments, GiGPO/GRPO/RLOO advantages ([`gigpo_core`]),
//! the clipped policy-gradient objective with a KL penalty, AdamW, evaluation on held-out
//! levels, checkpoints that resume exactly, and metrics (JSON lines, TensorBoard, PNG curves).
//!
//! One iteration (docs/training.md): collect `groups × num_generations` episodes
//! ([`rollout::collect`], sampling in process or on vLLM servers through the
//! [`sampler::Sampler`] seam), compute advantages ([`rollout::Rollout::assign_advantages`]),
//! turn steps into training sequences ([`rollout::Rollout::samples`]), score them
//! ([`update::score_samples`]), then `ppo_epochs` passes of mini-batch updates of
//! [`loss::policy_loss`] ([`update::update`]). `examples/train_minimal.rs` walks through one
//! run with these calls.

pub mod checkpoint;
pub mod checks;
pub mod config;
pub mod context;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod loss;
pub mod metrics;
pub mod plot;
pub mod policy;
pub mod profile;
pub mod prompt;
mod report;
mod resolve;
pub mod rollout;
pub mod rundir;
pub mod sampler;
pub mod samples;
pub mod sft;
pub mod tensorboard;
pub mod trainer;
pub mod update;
pub mod vllm;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use eval::{EvalResult, Evaluator};
pub use trainer::{RunSummary, Trainer};

/// A one-layer tiny model of width `hidden_size` for unit tests (2 heads, MLP 32).
#[cfg(test)]
pub(crate) fn small_tiny(hidden_size: usize) -> gigpo_model::TinyConfig {
    gigpo_model::TinyConfig {
        hidden_size,
        num_layers: 1,
        num_heads: 2,
        num_kv_heads: 2,
        intermediate_size: 32,
        ..gigpo_model::TinyConfig::default()
    }
}
