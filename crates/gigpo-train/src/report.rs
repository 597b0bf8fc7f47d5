//! What one training iteration reports: its metrics record, and the progress bar's line.

use gigpo_core::Advantages;

use crate::metrics::{names, Record};
use crate::rollout::Rollout;
use crate::update::UpdateStats;

/// What one iteration measured.
pub(crate) struct IterationReport<'a> {
    pub(crate) iteration: usize,
    pub(crate) env_steps: u64,
    pub(crate) rollout: &'a Rollout,
    pub(crate) advantages: &'a Advantages,
    pub(crate) update: UpdateStats,
    pub(crate) mismatch: Option<f64>,
    pub(crate) advantage_seconds: f64,
    pub(crate) update_seconds: f64,
    /// Seconds the servers took to load the new adapter, with the vLLM backend.
    pub(crate) sync_seconds: Option<f64>,
}

impl IterationReport<'_> {
    /// The iteration's metrics.
    pub(crate) fn record(&self) -> Record {
        let (r, d, up) = (self.rollout, &self.advantages.diagnostics, &self.update);
        let stats = r.stats();
        let tokens = (r.generated_tokens + r.prompt_tokens) as f64;
        let mut rec = Record::new();
        let mut put = |k: &str, v: f64| {
            rec.insert(k.to_string(), v);
        };
        put(names::ITERATION, self.iteration as f64);
        put(names::ENV_STEPS, self.env_steps as f64);
        put(names::TRAIN_SUCCESS, stats.success_rate);
        put(names::TRAIN_RETURN, stats.mean_return);
        put(names::TRAIN_LENGTH, stats.episode_length);
        put(names::TRAIN_INVALID, stats.invalid_action_rate);
        put(names::ADV_STEP_GROUPS, d.step_groups as f64);
        put(names::ADV_STEP_GROUP_SHARE, d.step_group_share);
        put(names::ADV_ZERO_VAR_SHARE, d.zero_variance_step_group_share);
        put(
            names::ADV_ZERO_VAR_EPISODE_SHARE,
            d.zero_variance_episode_group_share,
        );
        put(
            names::ADV_DISTINCT_RETURN_SHARE,
            d.distinct_return_step_group_share,
        );
        if let Some(s) = d.distinct_action_step_group_share {
            put(names::ADV_DISTINCT_ACTION_SHARE, s);
        }
        for (bin, s) in d.step_group_size_histogram() {
            put(&format!("{}{bin}", names::ADV_STEP_GROUP_SIZE), s);
        }
        put(names::ADV_MEAN_ABS, d.mean_abs_advantage);
        put(names::ADV_MEAN_ABS_EPISODE, d.mean_abs_episode_advantage);
        put(names::ADV_MEAN_ABS_STEP, d.mean_abs_step_advantage);
        put(names::LOSS_TOTAL, up.loss);
        put(names::LOSS_PG, up.pg);
        put(names::LOSS_KL, up.kl);
        put(names::LOSS_ENTROPY, up.entropy);
        put(names::LOSS_CLIP_FRACTION, up.clip_fraction);
        put(names::GRAD_NORM, up.grad_norm);
        put(names::TIME_ROLLOUT, r.seconds);
        put(names::TIME_ADVANTAGE, self.advantage_seconds);
        put(names::TIME_UPDATE, self.update_seconds);
        put(
            names::TOKENS_PER_S,
            (tokens + up.tokens) / (r.seconds + self.update_seconds).max(1e-9),
        );
        put(
            names::ROLLOUT_TOKENS_PER_S,
            r.generated_tokens as f64 / r.seconds.max(1e-9),
        );
        put(
            names::ROLLOUT_PROMPT_TOKENS_PER_S,
            r.prompt_tokens as f64 / r.seconds.max(1e-9),
        );
        put(
            names::UPDATE_TOKENS_PER_S,
            up.sequence_tokens / self.update_seconds.max(1e-9),
        );
        put(names::ENV_FAULTS, r.faults as f64);
        put(names::SAMPLER_FAULTS, r.sampler_faults as f64);
        if let Some(s) = self.sync_seconds {
            put(names::TIME_WEIGHT_SYNC, s);
        }
        put(names::TRAIN_FAULTED_STEPS, r.faulted_steps() as f64);
        if let Some(m) = self.mismatch {
            put(names::LOGPROB_MISMATCH, m);
        }
        rec
    }
}

pub(crate) fn progress_bar(on: bool, total: u64, done: u64) -> Option<indicatif::ProgressBar> {
    if !on {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} iters  {per_sec}  ETA {eta}  {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_position(done);
    Some(bar)
}

pub(crate) fn bar_message(rec: &Record) -> String {
    let g = |k: &str| rec.get(k).copied().unwrap_or(f64::NAN);
    let mut s = format!(
        "success {:.2}  return {:.2}  invalid {:.2}",
        g(names::TRAIN_SUCCESS),
        g(names::TRAIN_RETURN),
        g(names::TRAIN_INVALID)
    );
    if let Some(e) = rec.get(names::EVAL_SUCCESS) {
        s.push_str(&format!("  eval {e:.2}"));
    }
    s
}
