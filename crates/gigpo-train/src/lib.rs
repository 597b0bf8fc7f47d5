//! The GiGPO trainer: rollouts in environments, GiGPO/GRPO/RLOO advantages ([`gigpo_core`]),
//! the clipped policy-gradient objective with a KL penalty, AdamW, evaluation on held-out
//! levels, checkpoints that resume exactly, and metrics (JSON lines, TensorBoard, PNG curves).
//!
//! One iteration (SPEC §1–3): collect `groups × num_generations` episodes
//! ([`rollout::collect`], sampling in process or on vLLM servers through the
//! [`sampler::Sampler`] seam), compute advantages ([`layout::assign_advantages`]), turn steps into training
//! sequences ([`layout::build_samples`]), then `ppo_epochs` passes of mini-batch updates of
//! [`loss::policy_loss`].

pub mod checkpoint;
pub mod config;
pub mod context;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod layout;
pub mod loss;
pub mod metrics;
pub mod plot;
pub mod prompt;
pub mod rollout;
pub mod rundir;
pub mod sampler;
pub mod sft;
pub mod tensorboard;
pub mod trainer;
pub mod vllm;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use eval::{EvalResult, Evaluator};
pub use trainer::{RunSummary, Trainer};
