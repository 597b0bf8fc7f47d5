//! Diagnostics returned with every computation (docs/advantages.md, "Diagnostics").

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How much step-level signal a batch holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// Episode groups in the batch.
    pub episode_groups: usize,
    /// Trajectories in the batch.
    pub trajectories: usize,
    /// Steps in the batch.
    pub steps: usize,
    /// Number of step (anchor-state) groups.
    pub step_groups: usize,
    /// Step-group size → number of step groups of that size.
    pub step_group_sizes: BTreeMap<usize, usize>,
    /// Share of steps that are in a step group of size ≥ 2 (and so receive a step advantage).
    pub step_group_share: f64,
    /// Among step groups of size ≥ 2, the share whose returns are all equal (A^S = 0 there).
    pub zero_variance_step_group_share: f64,
    /// Among episode groups of ≥ 2 trajectories, the share whose scores are all equal.
    pub zero_variance_episode_group_share: f64,
}

pub(crate) fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}
