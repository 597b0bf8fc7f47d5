//! The advantage computation, top to bottom (SPEC §1; arXiv 2505.10978 §4).

use crate::batch::Batch;
use crate::config::{AdvantageConfig, Combine, Convention, Estimator};
use crate::diagnostics::{share, Diagnostics};
use crate::error::AdvantageError;
use crate::grouping::step_groups;
use crate::ids::StepGroupId;
use crate::normalize::{group_stats, normalize, GroupStats, NormRule, Singleton};
use serde::{Deserialize, Serialize};

/// The advantage of one step and its parts.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StepAdvantage {
    /// The combined advantage A_t that the loss uses.
    pub advantage: f64,
    /// The episode part A^E (for `rloo`, the leave-one-out advantage).
    pub episode_advantage: f64,
    /// The step part A^S (0 for `grpo` and `rloo`).
    pub step_advantage: f64,
    /// The discounted return R_t from this step on.
    #[serde(rename = "return")]
    pub ret: f64,
}

/// Advantages for every step of a batch, with diagnostics.
#[derive(Debug, Clone)]
pub struct Advantages {
    /// Indexed like `batch.steps()`.
    pub steps: Vec<StepAdvantage>,
    /// The step group of each step, indexed like `batch.steps()`.
    pub step_group: Vec<StepGroupId>,
    pub diagnostics: Diagnostics,
}

/// Compute advantages for every step of `batch` under `cfg`.
///
/// Cost is linear in the number of steps (similarity grouping aside, see [`crate::grouping`]).
///
/// ```
/// use gigpo_core::{compute, AdvantageConfig, BatchBuilder, StepInput};
/// let mut b = BatchBuilder::new();
/// b.push_trajectory("g", "win", [StepInput::new("s0", 0.0), StepInput::new("s1", 1.0)]).unwrap();
/// b.push_trajectory("g", "lose", [StepInput::new("s0", 0.0), StepInput::new("s2", 0.0)]).unwrap();
/// let adv = compute(&b.build(), &AdvantageConfig::default()).unwrap();
/// assert!(adv.steps[0].advantage > 0.0 && adv.steps[2].advantage < 0.0);
/// ```
pub fn compute(batch: &Batch, cfg: &AdvantageConfig) -> Result<Advantages, AdvantageError> {
    cfg.validate()?;
    validate_batch(batch)?;
    let (returns, scores) = returns_and_scores(batch, cfg);
    check_scores(batch, &scores)?;
    let episode = episode_advantages(batch, cfg, &scores);
    let (step_group, num_step_groups) = step_groups(batch, cfg.anchor_similarity);
    let keys: Vec<u32> = step_group.iter().map(|g| g.0).collect();
    let step_stats = group_stats(&keys, &returns, num_step_groups);
    let mut step = vec![0.0; batch.num_steps()];
    if cfg.estimator == Estimator::Gigpo {
        // Eq. 7: A^S = (R_t − mean_S) / F_S; a step group of one gets 0 in both conventions.
        let rule = norm_rule(cfg, Singleton::Zero);
        normalize(&keys, &returns, &step_stats, rule, &mut step);
    }
    let steps: Vec<StepAdvantage> = (0..batch.num_steps())
        .map(|i| StepAdvantage {
            advantage: combine(cfg, episode[i], step[i]),
            episode_advantage: episode[i],
            step_advantage: step[i],
            ret: returns[i],
        })
        .collect();
    check_results(batch, &steps)?;
    let diagnostics = diagnostics(batch, &step_stats, &scores);
    Ok(Advantages {
        steps,
        step_group,
        diagnostics,
    })
}

fn validate_batch(batch: &Batch) -> Result<(), AdvantageError> {
    for g in batch.groups() {
        if g.trajectories.is_empty() {
            return Err(AdvantageError::EmptyGroup {
                group: g.name.clone(),
            });
        }
    }
    for t in batch.trajectories() {
        if t.steps.is_empty() {
            let group = batch.groups()[t.group.index()].name.clone();
            return Err(AdvantageError::EmptyTrajectory {
                group,
                trajectory: t.name.clone(),
            });
        }
    }
    if let Some(i) = batch.steps().iter().position(|s| !s.reward.is_finite()) {
        let (group, trajectory, step) = batch.locate(i);
        let value = batch.steps()[i].reward;
        return Err(AdvantageError::NonFiniteReward {
            group,
            trajectory,
            step,
            value,
        });
    }
    Ok(())
}

/// A trajectory's score R(τ) = Σ_t r'_t overflows when its finite rewards sum past `f64::MAX`.
fn check_scores(batch: &Batch, scores: &[f64]) -> Result<(), AdvantageError> {
    match scores.iter().position(|s| !s.is_finite()) {
        None => Ok(()),
        Some(t) => {
            let traj = &batch.trajectories()[t];
            Err(AdvantageError::ScoreOverflow {
                group: batch.groups()[traj.group.index()].name.clone(),
                trajectory: traj.name.clone(),
                value: scores[t],
            })
        }
    }
}

/// Every output must be finite: an infinite or NaN result names its step and quantity.
fn check_results(batch: &Batch, steps: &[StepAdvantage]) -> Result<(), AdvantageError> {
    for (i, s) in steps.iter().enumerate() {
        let parts = [
            ("return", s.ret),
            ("episode_advantage", s.episode_advantage),
            ("step_advantage", s.step_advantage),
            ("advantage", s.advantage),
        ];
        if let Some(&(quantity, value)) = parts.iter().find(|(_, v)| !v.is_finite()) {
            let (group, trajectory, step) = batch.locate(i);
            return Err(AdvantageError::NonFiniteResult {
                group,
                trajectory,
                step,
                quantity,
                value,
            });
        }
    }
    Ok(())
}

fn penalty(cfg: &AdvantageConfig, valid: bool) -> f64 {
    if valid {
        0.0
    } else {
        cfg.invalid_action_penalty
    }
}

/// Discounted step returns and trajectory scores, in one backward pass per trajectory.
///
/// SPEC §1.1: r'_t = r_t − λ for invalid actions, before discounting (paper convention).
/// Eq. 5: R_t = Σ_{k≥t} γ^{k−t} r'_k, no bootstrap at a cut-off. SPEC §1.3: R(τ) = Σ_t r'_t.
/// The verl-agent convention discounts raw rewards and subtracts λ from R_t afterwards.
fn returns_and_scores(batch: &Batch, cfg: &AdvantageConfig) -> (Vec<f64>, Vec<f64>) {
    let mut returns = vec![0.0; batch.num_steps()];
    let mut scores = Vec::with_capacity(batch.trajectories().len());
    let verl = cfg.convention == Convention::VerlAgent;
    for t in batch.trajectories() {
        let (mut running, mut score) = (0.0, 0.0);
        for i in t.steps.clone().rev() {
            let s = &batch.steps()[i];
            let p = penalty(cfg, s.action_valid);
            score += s.reward - p;
            if verl {
                running = s.reward + cfg.gamma * running;
                returns[i] = running - p;
            } else {
                running = (s.reward - p) + cfg.gamma * running;
                returns[i] = running;
            }
        }
        scores.push(score);
    }
    (returns, scores)
}

fn norm_rule(cfg: &AdvantageConfig, singleton: Singleton) -> NormRule {
    NormRule {
        norm: cfg.norm,
        fixed: cfg.fixed_norm,
        epsilon: cfg.epsilon,
        singleton,
    }
}

/// The episode-level advantage of every step (constant over a trajectory except under the
/// verl-agent convention, where each step row carries its own penalised score).
fn episode_advantages(batch: &Batch, cfg: &AdvantageConfig, scores: &[f64]) -> Vec<f64> {
    let groups: Vec<u32> = batch.trajectories().iter().map(|t| t.group.0).collect();
    let per_traj = match (cfg.estimator, cfg.convention) {
        (Estimator::Rloo, _) => rloo(&groups, scores, batch.groups().len()),
        (_, Convention::Paper) => {
            // Eq. 3: A^E(τ_i) = (R(τ_i) − mean) / F over the N trajectories of the group.
            let stats = group_stats(&groups, scores, batch.groups().len());
            let mut out = vec![0.0; scores.len()];
            normalize(
                &groups,
                scores,
                &stats,
                norm_rule(cfg, Singleton::Zero),
                &mut out,
            );
            out
        }
        (_, Convention::VerlAgent) => return verl_episode_advantages(batch, cfg),
    };
    let mut out = vec![0.0; batch.num_steps()];
    for (t, a) in batch.trajectories().iter().zip(per_traj) {
        out[t.steps.clone()].fill(a);
    }
    out
}

/// SPEC §1.8: A_i = R_i − (1/(N−1)) Σ_{j≠i} R_j; 0 for a group of one or of equal returns.
/// The sums run over the returns divided by the group's scale (see [`GroupStats`]), so they
/// cannot overflow.
fn rloo(groups: &[u32], scores: &[f64], num_groups: usize) -> Vec<f64> {
    let stats = group_stats(groups, scores, num_groups);
    let mut sum = vec![0.0; num_groups];
    for (&g, &s) in groups.iter().zip(scores) {
        sum[g as usize] += s / stats.scale[g as usize];
    }
    groups
        .iter()
        .zip(scores)
        .map(|(&g, &s)| {
            let (g, n) = (g as usize, stats.count[g as usize] as f64);
            if n < 2.0 || stats.all_equal[g] {
                0.0
            } else {
                let (p, s) = (stats.scale[g], s / stats.scale[g]);
                (s - (sum[g] - s) / (n - 1.0)) * p
            }
        })
        .collect()
}

/// SPEC §1.9: each step row's score is its trajectory's raw return minus λ if that step's action
/// was invalid; statistics over the rows of the group; a group of one row keeps its raw score.
fn verl_episode_advantages(batch: &Batch, cfg: &AdvantageConfig) -> Vec<f64> {
    let mut keys = Vec::with_capacity(batch.num_steps());
    let mut row_scores = Vec::with_capacity(batch.num_steps());
    for t in batch.trajectories() {
        let steps = &batch.steps()[t.steps.clone()];
        let raw: f64 = steps.iter().map(|s| s.reward).sum();
        for s in steps {
            keys.push(t.group.0);
            row_scores.push(raw - penalty(cfg, s.action_valid));
        }
    }
    let stats = group_stats(&keys, &row_scores, batch.groups().len());
    let mut out = vec![0.0; row_scores.len()];
    normalize(
        &keys,
        &row_scores,
        &stats,
        norm_rule(cfg, Singleton::Raw),
        &mut out,
    );
    out
}

/// Eq. 8 (additive) or the convex blend of SPEC §1.7; `grpo`/`rloo` use the episode part alone.
fn combine(cfg: &AdvantageConfig, episode: f64, step: f64) -> f64 {
    let w = cfg.step_advantage_weight;
    match (cfg.estimator, cfg.combine) {
        (Estimator::Gigpo, Combine::Additive) => episode + w * step,
        (Estimator::Gigpo, Combine::Convex) => w * episode + (1.0 - w) * step,
        (Estimator::Grpo | Estimator::Rloo, _) => episode,
    }
}

fn diagnostics(batch: &Batch, step_stats: &GroupStats, scores: &[f64]) -> Diagnostics {
    let mut histogram: Vec<usize> = Vec::new();
    let (mut shared_steps, mut multi, mut multi_flat) = (0usize, 0usize, 0usize);
    for (&n, &flat) in step_stats.count.iter().zip(&step_stats.all_equal) {
        let n_us = n as usize;
        if histogram.len() <= n_us {
            histogram.resize(n_us + 1, 0);
        }
        histogram[n_us] += 1;
        if n >= 2 {
            shared_steps += n as usize;
            multi += 1;
            multi_flat += flat as usize;
        }
    }
    let groups: Vec<u32> = batch.trajectories().iter().map(|t| t.group.0).collect();
    let ep = group_stats(&groups, scores, batch.groups().len());
    let ep_multi = ep.count.iter().filter(|&&n| n >= 2).count();
    let ep_flat = ep
        .count
        .iter()
        .zip(&ep.all_equal)
        .filter(|(&n, &f)| n >= 2 && f)
        .count();
    Diagnostics {
        episode_groups: batch.groups().len(),
        trajectories: batch.trajectories().len(),
        steps: batch.num_steps(),
        step_groups: step_stats.count.len(),
        step_group_sizes: histogram
            .into_iter()
            .enumerate()
            .filter(|&(_, c)| c > 0)
            .collect(),
        step_group_share: share(shared_steps, batch.num_steps()),
        zero_variance_step_group_share: share(multi_flat, multi),
        zero_variance_episode_group_share: share(ep_flat, ep_multi),
    }
}
