//! Per-iteration metrics: one JSON object per line in `metrics.jsonl` (flushed and synced after
//! every line) and the same scalars in TensorBoard event files under `tensorboard/`.
//!
//! Metric names are stable (docs/metrics.md lists them); scripts read them.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};
use crate::tensorboard::EventWriter;

/// Stable metric names.
pub mod names {
    pub const ITERATION: &str = "iteration";
    pub const ENV_STEPS: &str = "env_steps";
    pub const TRAIN_SUCCESS: &str = "train/success_rate";
    pub const TRAIN_RETURN: &str = "train/mean_return";
    pub const TRAIN_LENGTH: &str = "train/episode_length";
    pub const TRAIN_INVALID: &str = "train/invalid_action_rate";
    pub const ADV_STEP_GROUPS: &str = "adv/step_groups";
    pub const ADV_STEP_GROUP_SHARE: &str = "adv/step_group_share";
    pub const ADV_ZERO_VAR_SHARE: &str = "adv/zero_variance_step_group_share";
    pub const ADV_ZERO_VAR_EPISODE_SHARE: &str = "adv/zero_variance_episode_group_share";
    pub const ADV_DISTINCT_RETURN_SHARE: &str = "adv/distinct_return_step_group_share";
    pub const ADV_DISTINCT_ACTION_SHARE: &str = "adv/distinct_action_step_group_share";
    pub const ADV_MEAN_ABS: &str = "adv/mean_abs";
    pub const ADV_MEAN_ABS_EPISODE: &str = "adv/mean_abs_episode";
    pub const ADV_MEAN_ABS_STEP: &str = "adv/mean_abs_step";
    /// Prefix of the step-group size histogram: `adv/step_group_size/1`, `/2`, `/3-4`, `/5-8`,
    /// `/9+` (gigpo_core::SIZE_BINS), each the share of step groups of those sizes.
    pub const ADV_STEP_GROUP_SIZE: &str = "adv/step_group_size/";
    pub const LOSS_TOTAL: &str = "loss/total";
    pub const LOSS_PG: &str = "loss/pg";
    pub const LOSS_KL: &str = "loss/kl";
    pub const LOSS_ENTROPY: &str = "loss/entropy";
    pub const LOSS_CLIP_FRACTION: &str = "loss/clip_fraction";
    pub const GRAD_NORM: &str = "optim/grad_norm";
    pub const TIME_ROLLOUT: &str = "time/rollout_s";
    pub const TIME_ADVANTAGE: &str = "time/advantage_s";
    pub const TIME_UPDATE: &str = "time/update_s";
    pub const TIME_EVAL: &str = "time/eval_s";
    pub const TOKENS_PER_S: &str = "perf/tokens_per_s";
    pub const ENV_FAULTS: &str = "env/faults";
    pub const SAMPLER_FAULTS: &str = "rollout/sampler_faults";
    pub const ROLLOUT_TOKENS_PER_S: &str = "perf/rollout_tokens_per_s";
    pub const ROLLOUT_PROMPT_TOKENS_PER_S: &str = "perf/rollout_prompt_tokens_per_s";
    pub const UPDATE_TOKENS_PER_S: &str = "perf/update_tokens_per_s";
    pub const TIME_WEIGHT_SYNC: &str = "time/weight_sync_s";
    pub const EVAL_SUCCESS: &str = "eval/success_rate";
    pub const EVAL_RETURN: &str = "eval/mean_return";
    pub const EVAL_LENGTH: &str = "eval/episode_length";
    pub const EVAL_INVALID: &str = "eval/invalid_action_rate";
    pub const EVAL_LEVELS: &str = "eval/levels";
    pub const EVAL_SUCCESS_LOW: &str = "eval/success_rate_ci_low";
    pub const EVAL_SUCCESS_HIGH: &str = "eval/success_rate_ci_high";
    pub const EVAL_GREEDY_SUCCESS: &str = "eval/greedy_success_rate";
    pub const EVAL_GREEDY_SUCCESS_LOW: &str = "eval/greedy_success_rate_ci_low";
    pub const EVAL_GREEDY_SUCCESS_HIGH: &str = "eval/greedy_success_rate_ci_high";
    pub const EVAL_GREEDY_RETURN: &str = "eval/greedy_mean_return";
    pub const EVAL_GREEDY_INVALID: &str = "eval/greedy_invalid_action_rate";
    pub const EVAL_RANDOM_SUCCESS: &str = "eval/random_success_rate";
    pub const EVAL_OPTIMAL_SUCCESS: &str = "eval/optimal_success_rate";
    pub const TRAIN_FAULTED_STEPS: &str = "train/faulted_steps";
    pub const LOGPROB_MISMATCH: &str = "train/logprob_mismatch";
    pub const SFT_DEMONSTRATIONS: &str = "sft/demonstrations";
    pub const SFT_FIRST_LOSS: &str = "sft/first_epoch_loss";
    pub const SFT_LAST_LOSS: &str = "sft/last_epoch_loss";
    pub const TIME_SFT: &str = "time/sft_s";
}

/// The metrics of one iteration, by name.
pub type Record = BTreeMap<String, f64>;

/// Writes `metrics.jsonl` and TensorBoard events in a run directory.
#[derive(Debug)]
pub struct MetricsLog {
    jsonl: File,
    jsonl_path: PathBuf,
    events: EventWriter,
}

impl MetricsLog {
    /// Opens the log of `run_dir` for appending, first dropping lines of iterations after
    /// `keep_through` (what a resumed run will write again). `None` starts a fresh file.
    pub fn open(run_dir: &Path, keep_through: Option<usize>) -> Result<Self> {
        let jsonl_path = run_dir.join("metrics.jsonl");
        match keep_through {
            None => {
                File::create(&jsonl_path).map_err(|e| TrainError::io(&jsonl_path, e))?;
            }
            Some(last) => truncate_after(&jsonl_path, last)?,
        }
        let jsonl = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&jsonl_path)
            .map_err(|e| TrainError::io(&jsonl_path, e))?;
        let events = EventWriter::create(&run_dir.join("tensorboard"))?;
        Ok(Self {
            jsonl,
            jsonl_path,
            events,
        })
    }

    /// Appends one iteration's record (it must hold `iteration`).
    pub fn write(&mut self, record: &Record) -> Result<()> {
        let step = record.get(names::ITERATION).copied().unwrap_or(0.0) as i64;
        let line =
            serde_json::to_string(record).map_err(|e| TrainError::io(&self.jsonl_path, e))?;
        writeln!(self.jsonl, "{line}").map_err(|e| TrainError::io(&self.jsonl_path, e))?;
        self.jsonl
            .sync_data()
            .map_err(|e| TrainError::io(&self.jsonl_path, e))?;
        let scalars: Vec<(&str, f32)> = record
            .iter()
            .filter(|(k, _)| k.as_str() != names::ITERATION)
            .map(|(k, v)| (k.as_str(), *v as f32))
            .collect();
        self.events.scalars(step, &scalars)
    }
}

/// Reads every record of a `metrics.jsonl`, naming the line of any bad one.
pub fn read_jsonl(path: &Path) -> Result<Vec<Record>> {
    let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: Record = serde_json::from_str(&line).map_err(|e| TrainError::Metrics {
            path: path.to_path_buf(),
            message: format!("line {}: {e}", i + 1),
        })?;
        out.push(rec);
    }
    Ok(out)
}

/// Rewrites `path` atomically without the records of iterations after `last` (and without a
/// torn last line).
fn truncate_after(path: &Path, last: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut kept = String::new();
    for line in text.lines() {
        let Ok(rec) = serde_json::from_str::<Record>(line) else {
            continue;
        };
        if rec.get(names::ITERATION).is_some_and(|&i| i <= last as f64) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    crate::fsutil::write_atomic(path, kept.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize, v: f64) -> Record {
        [
            (names::ITERATION.to_string(), i as f64),
            (names::TRAIN_SUCCESS.to_string(), v),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn appends_and_truncates_for_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::open(dir.path(), None).unwrap();
        for i in 0..4 {
            log.write(&rec(i, i as f64 / 10.0)).unwrap();
        }
        drop(log);
        assert_eq!(
            read_jsonl(&dir.path().join("metrics.jsonl")).unwrap().len(),
            4
        );
        let mut log = MetricsLog::open(dir.path(), Some(1)).unwrap();
        log.write(&rec(2, 0.9)).unwrap();
        let back = read_jsonl(&dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(
            back.iter()
                .map(|r| r[names::TRAIN_SUCCESS])
                .collect::<Vec<_>>(),
            vec![0.0, 0.1, 0.9]
        );
    }

    #[test]
    fn bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        std::fs::write(&p, "{\"iteration\": 0}\nnot json\n").unwrap();
        let e = read_jsonl(&p).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
