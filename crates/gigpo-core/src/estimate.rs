//! The advantage computation, top to bottom (docs/advantages.md; arXiv 2505.10978 §4).
//!
//! [`compute`] finds the step returns, the trajectory scores and the step groups once, then
//! hands them to the chosen estimator: `gigpo`, `grpo` or `rloo`, one function each.

use crate::batch::Batch;
use crate::config::{AdvantageConfig, Combine, Convention, Estimator, Levels};
use crate::diagnostics::{share, Diagnostics};
use crate::error::AdvantageError;
use crate::grouping::step_groups;
use crate::ids::{ActionId, StepGroupId};
use crate::normalize::{group_stats, normalize, GroupStats, NormRule, Singleton};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    let groups = StepGroups::new(batch, cfg, &returns);
    let steps = match cfg.estimator {
        Estimator::Gigpo => gigpo(batch, cfg, &returns, &scores, &groups),
        Estimator::Grpo => grpo(batch, cfg, &returns, &scores),
        Estimator::Rloo => rloo(batch, &returns, &scores),
    };
    check_results(batch, &steps)?;
    let diagnostics = diagnostics(batch, &groups, &scores, &steps);
    Ok(Advantages {
        steps,
        step_group: groups.of_step,
        diagnostics,
    })
}

/// The step groups of a batch (Eq. 6) with the statistics of their step returns.
struct StepGroups {
    /// The step group of each step, indexed like `batch.steps()`.
    of_step: Vec<StepGroupId>,
    /// The same as plain numbers, the keys of `stats`.
    keys: Vec<u32>,
    /// Count, mean and spread of R_t per step group.
    stats: GroupStats,
}

impl StepGroups {
    fn new(batch: &Batch, cfg: &AdvantageConfig, returns: &[f64]) -> Self {
        let (of_step, count) = step_groups(batch, cfg.anchor_similarity);
        let keys: Vec<u32> = of_step.iter().map(|g| g.0).collect();
        let stats = group_stats(&keys, returns, count);
        Self {
            of_step,
            keys,
            stats,
        }
    }
}

/// GiGPO. Eq. 7: A^S(a_t) = (R_t − mean_S) / F_S over the step group S of the step's anchor
/// state; a step group of one gets 0 in both conventions. Eq. 8: A_t = A^E(τ) + ω·A^S(a_t)
/// (`additive`), or the blend ω·A^E(τ) + (1 − ω)·A^S(a_t) (`convex`). `levels` drops one term
/// for the ablations; the dropped part is reported as 0.
fn gigpo(
    batch: &Batch,
    cfg: &AdvantageConfig,
    returns: &[f64],
    scores: &[f64],
    groups: &StepGroups,
) -> Vec<StepAdvantage> {
    let mut episode = episode_advantages(batch, cfg, scores);
    let mut step = vec![0.0; batch.num_steps()];
    match cfg.levels {
        Levels::Both => step_advantages(cfg, returns, groups, &mut step),
        Levels::Episode => {}
        Levels::Step => {
            step_advantages(cfg, returns, groups, &mut step);
            episode.fill(0.0);
        }
    }
    let w = cfg.step_advantage_weight;
    let (episode_weight, step_weight) = match cfg.combine {
        Combine::Additive => (1.0, w),
        Combine::Convex => (w, 1.0 - w),
    };
    (0..batch.num_steps())
        .map(|i| {
            let (e, s) = (episode[i], step[i]);
            StepAdvantage {
                advantage: episode_weight * e + step_weight * s,
                episode_advantage: e,
                step_advantage: s,
                ret: returns[i],
            }
        })
        .collect()
}

/// A^S of every step (Eq. 7), written into `out`.
fn step_advantages(cfg: &AdvantageConfig, returns: &[f64], groups: &StepGroups, out: &mut [f64]) {
    let rule = norm_rule(cfg, Singleton::Zero);
    normalize(&groups.keys, returns, &groups.stats, rule, out);
}

/// GRPO: A_t = A^E(τ) (Eq. 3) for every step of τ.
fn grpo(
    batch: &Batch,
    cfg: &AdvantageConfig,
    returns: &[f64],
    scores: &[f64],
) -> Vec<StepAdvantage> {
    episode_only(episode_advantages(batch, cfg, scores), returns)
}

/// RLOO: A_t = R(τ_i) − (1/(N−1)) Σ_{j≠i} R(τ_j) for every step of τ_i, without normalisation,
/// in both conventions; 0 for a group of one or of equal scores. The sums run over the scores
/// divided by the group's scale (see [`GroupStats`]), so they cannot overflow.
fn rloo(batch: &Batch, returns: &[f64], scores: &[f64]) -> Vec<StepAdvantage> {
    let groups = trajectory_groups(batch);
    let stats = group_stats(&groups, scores, batch.groups().len());
    let mut sum = vec![0.0; batch.groups().len()];
    for (&g, &s) in groups.iter().zip(scores) {
        sum[g as usize] += s / stats.scale[g as usize];
    }
    let per_trajectory = groups.iter().zip(scores).map(|(&g, &s)| {
        let (g, n) = (g as usize, stats.count[g as usize] as f64);
        if n < 2.0 || stats.all_equal[g] {
            0.0
        } else {
            let (p, s) = (stats.scale[g], s / stats.scale[g]);
            (s - (sum[g] - s) / (n - 1.0)) * p
        }
    });
    episode_only(per_step(batch, per_trajectory), returns)
}

/// Step advantages made of the episode part alone (A^S = 0).
fn episode_only(episode: Vec<f64>, returns: &[f64]) -> Vec<StepAdvantage> {
    episode
        .into_iter()
        .zip(returns)
        .map(|(e, &ret)| StepAdvantage {
            advantage: e,
            episode_advantage: e,
            step_advantage: 0.0,
            ret,
        })
        .collect()
}

fn validate_batch(batch: &Batch) -> Result<(), AdvantageError> {
    for g in batch.groups() {
        if g.trajectories.is_empty() {
            return Err(AdvantageError::EmptyGroup {
                group: g.name.to_string(),
            });
        }
    }
    for t in batch.trajectories() {
        if t.steps.is_empty() {
            let group = batch.groups()[t.group.index()].name.to_string();
            return Err(AdvantageError::EmptyTrajectory {
                group,
                trajectory: t.name.to_string(),
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
                group: batch.groups()[traj.group.index()].name.to_string(),
                trajectory: traj.name.to_string(),
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
/// The penalty (docs/advantages.md, "The computation", step 1): r'_t = r_t − λ for an invalid
/// action, before discounting. Eq. 5: R_t = Σ_{k≥t} γ^{k−t} r'_k, no bootstrap at a cut-off.
/// The score of Eq. 3: R(τ) = Σ_t r'_t, undiscounted. The verl-agent convention discounts raw
/// rewards and subtracts λ from R_t afterwards.
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

/// The episode advantage A^E of every step: Eq. 3, A^E(τ_i) = (R(τ_i) − mean) / F over the N
/// trajectories of the group, constant over a trajectory; under the verl-agent convention each
/// step row carries its own penalised score ([`verl_episode_advantages`]).
fn episode_advantages(batch: &Batch, cfg: &AdvantageConfig, scores: &[f64]) -> Vec<f64> {
    match cfg.convention {
        Convention::Paper => {
            let groups = trajectory_groups(batch);
            let stats = group_stats(&groups, scores, batch.groups().len());
            let mut out = vec![0.0; scores.len()];
            let rule = norm_rule(cfg, Singleton::Zero);
            normalize(&groups, scores, &stats, rule, &mut out);
            per_step(batch, out)
        }
        Convention::VerlAgent => verl_episode_advantages(batch, cfg),
    }
}

/// The episode group of every trajectory, as plain numbers.
fn trajectory_groups(batch: &Batch) -> Vec<u32> {
    batch.trajectories().iter().map(|t| t.group.0).collect()
}

/// One value per trajectory spread over its steps.
fn per_step(batch: &Batch, per_trajectory: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut out = vec![0.0; batch.num_steps()];
    for (t, a) in batch.trajectories().iter().zip(per_trajectory) {
        out[t.steps.clone()].fill(a);
    }
    out
}

/// A^E under the verl-agent convention (docs/advantages.md, "The `verl-agent` preset"): each
/// step row's score is its trajectory's raw return minus λ if that step's action was invalid;
/// statistics over the rows of the group; a group of one row keeps its raw score.
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

fn diagnostics(
    batch: &Batch,
    groups: &StepGroups,
    scores: &[f64],
    steps: &[StepAdvantage],
) -> Diagnostics {
    let stats = &groups.stats;
    let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
    let (mut shared_steps, mut multi, mut multi_flat) = (0usize, 0usize, 0usize);
    for (&n, &flat) in stats.count.iter().zip(&stats.all_equal) {
        *sizes.entry(n as usize).or_default() += 1;
        if n >= 2 {
            shared_steps += n as usize;
            multi += 1;
            multi_flat += flat as usize;
        }
    }
    let ep = group_stats(&trajectory_groups(batch), scores, batch.groups().len());
    let ep_multi = ep.count.iter().filter(|&&n| n >= 2).count();
    let ep_flat = ep
        .count
        .iter()
        .zip(&ep.all_equal)
        .filter(|(&n, &f)| n >= 2 && f)
        .count();
    let mean_abs = |part: fn(&StepAdvantage) -> f64| {
        steps.iter().map(|s| part(s).abs()).sum::<f64>() / steps.len().max(1) as f64
    };
    Diagnostics {
        episode_groups: batch.groups().len(),
        trajectories: batch.trajectories().len(),
        steps: batch.num_steps(),
        step_groups: stats.count.len(),
        singleton_step_group_share: share(sizes.get(&1).copied().unwrap_or(0), stats.count.len()),
        step_group_sizes: sizes,
        step_group_share: share(shared_steps, batch.num_steps()),
        zero_variance_step_group_share: share(multi_flat, multi),
        distinct_return_step_group_share: share(multi - multi_flat, multi),
        distinct_action_step_group_share: distinct_action_share(batch, groups),
        zero_variance_episode_group_share: share(ep_flat, ep_multi),
        mean_abs_advantage: mean_abs(|s| s.advantage),
        mean_abs_episode_advantage: mean_abs(|s| s.episode_advantage),
        mean_abs_step_advantage: mean_abs(|s| s.step_advantage),
    }
}

/// Among step groups of size ≥ 2, the share whose steps took at least two different actions
/// (steps without an action key are not counted); `None` when no step has an action key.
fn distinct_action_share(batch: &Batch, groups: &StepGroups) -> Option<f64> {
    let num_groups = groups.stats.count.len();
    let mut first: Vec<Option<ActionId>> = vec![None; num_groups];
    let mut differ = vec![false; num_groups];
    let mut any = false;
    for (step, g) in batch.steps().iter().zip(&groups.of_step) {
        let Some(action) = step.action else { continue };
        any = true;
        match first[g.index()] {
            None => first[g.index()] = Some(action),
            Some(a) if a != action => differ[g.index()] = true,
            Some(_) => {}
        }
    }
    let multi = groups.stats.count.iter().filter(|&&n| n >= 2).count();
    any.then(|| share(differ.iter().filter(|&&d| d).count(), multi))
}
