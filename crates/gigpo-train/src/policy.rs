//! The policies of a run: the trained policy as a configuration describes it, its frozen
//! reference, the policy of a checkpoint, and whether an episode fits the context of what
//! samples it.

use std::path::Path;

use gigpo_model::Policy;

use crate::checkpoint;
use crate::config::TrainConfig;
use crate::error::Result;
use crate::sampler::Sampler;

/// The policy a configuration describes, freshly initialised: the tiny model from the seed, or
/// the Hugging Face directory, with a fresh LoRA adapter when configured.
pub fn initial_policy(cfg: &TrainConfig) -> Result<Policy> {
    let device = cfg.model.device.open()?;
    let mut policy = match &cfg.model.path {
        None => Policy::tiny(&cfg.tiny_config()?, cfg.seed, &device)?,
        Some(path) => Policy::load(path, &device, None)?,
    };
    if let Some(lora) = cfg.lora() {
        policy.add_lora(lora)?;
    }
    Ok(policy)
}

/// The frozen reference of the KL term: a copy of `policy` when β > 0 and every weight is
/// trained; `None` without a KL term or with LoRA (the reference is then the policy with its
/// adapter off).
pub fn reference_policy(cfg: &TrainConfig, policy: &Policy) -> Result<Option<Policy>> {
    if cfg.beta() == 0.0 || policy.lora_config().is_some() {
        return Ok(None);
    }
    Ok(Some(policy.frozen_copy()?))
}

/// Loads the policy of a checkpoint directory (`run_dir/checkpoints/iter-N`) with its
/// configuration.
pub fn load_checkpoint(dir: &Path) -> Result<(Policy, TrainConfig)> {
    let cfg = TrainConfig::from_file(&dir.join("config.toml"))?;
    let policy = initial_policy(&cfg)?;
    checkpoint::load_trainable(dir, &policy)?;
    Ok((policy, cfg))
}

/// Checks that the longest sequence of an episode of `cfg` fits the context of `sampler` (the
/// policy, or the inference servers), before anything runs (docs/training.md). Remote
/// environments are checked when a rollout starts instead.
pub fn check_context(cfg: &TrainConfig, sampler: &dyn Sampler) -> Result<()> {
    match cfg.episode_tokens(sampler.tokenizer())? {
        Some(needed) => sampler.fits(&cfg.prompt_style(), needed, cfg.rollout.max_steps),
        None => Ok(()),
    }
}
