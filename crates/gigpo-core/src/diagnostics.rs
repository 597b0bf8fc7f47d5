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
    /// Share of step groups of size 1 (their steps get A^S = 0).
    pub singleton_step_group_share: f64,
    /// Share of steps that are in a step group of size ≥ 2 (and so receive a step advantage).
    pub step_group_share: f64,
    /// Among step groups of size ≥ 2, the share whose returns are all equal (A^S = 0 there).
    pub zero_variance_step_group_share: f64,
    /// Among step groups of size ≥ 2, the share with at least two distinct returns (A^S ≠ 0
    /// there): the complement of `zero_variance_step_group_share`, 0 without such groups.
    pub distinct_return_step_group_share: f64,
    /// Among step groups of size ≥ 2, the share whose steps took at least two distinct actions
    /// (steps without an action key left out); `None` when no step of the batch has one.
    pub distinct_action_step_group_share: Option<f64>,
    /// Among episode groups of ≥ 2 trajectories, the share whose scores are all equal.
    pub zero_variance_episode_group_share: f64,
    /// Mean |A_t| over steps.
    pub mean_abs_advantage: f64,
    /// Mean |A^E| over steps (the RLOO advantage for `rloo`; 0 with `levels = step`).
    pub mean_abs_episode_advantage: f64,
    /// Mean |A^S| over steps, steps in groups of one included (0 for `grpo`, `rloo` and
    /// `levels = episode`).
    pub mean_abs_step_advantage: f64,
}

/// The bins of [`Diagnostics::step_group_size_histogram`]: a label and the sizes it holds.
pub const SIZE_BINS: [(&str, usize, usize); 5] = [
    ("1", 1, 1),
    ("2", 2, 2),
    ("3-4", 3, 4),
    ("5-8", 5, 8),
    ("9+", 9, usize::MAX),
];

impl Diagnostics {
    /// The share of step groups whose size falls in each bin of [`SIZE_BINS`], as (label,
    /// share); the shares sum to 1 (all 0 without step groups).
    ///
    /// ```
    /// use gigpo_core::{compute, AdvantageConfig, BatchBuilder, StepInput};
    /// let mut b = BatchBuilder::new();
    /// for t in ["a", "b", "c"] {
    ///     b.push_trajectory("g", t, [StepInput::new("start", 0.0), StepInput::new(t, 1.0)]).unwrap();
    /// }
    /// let d = compute(&b.build(), &AdvantageConfig::default()).unwrap().diagnostics;
    /// let h = d.step_group_size_histogram();
    /// assert_eq!(h[0], ("1", 0.75)); // "a", "b", "c"
    /// assert_eq!(h[2], ("3-4", 0.25)); // "start"
    /// ```
    pub fn step_group_size_histogram(&self) -> [(&'static str, f64); 5] {
        SIZE_BINS.map(|(label, low, high)| {
            let n: usize = self
                .step_group_sizes
                .range(low..=high)
                .map(|(_, c)| c)
                .sum();
            (label, share(n, self.step_groups))
        })
    }
}

pub(crate) fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}
