//! Property tests: the engine against a naive implementation written straight from the formulas
//! of docs/advantages.md, plus the invariants the estimators must satisfy.

use gigpo_core::*;
use proptest::prelude::*;
use std::collections::HashMap;

#[derive(Debug, Clone)]
struct Traj {
    group: String,
    name: String,
    steps: Vec<(String, f64, bool)>,
}

fn build(trajs: &[Traj]) -> Batch {
    let mut b = BatchBuilder::new();
    for t in trajs {
        let steps = t.steps.iter().map(|(a, r, v)| StepInput {
            anchor: a,
            reward: *r,
            action_valid: *v,
            action: None,
        });
        b.push_trajectory(&t.group, &t.name, steps).unwrap();
    }
    b.build()
}

// ---------------------------------------------------------------------------------------------
// The naive implementation: one formula at a time, quadratic where that is simplest.

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn sample_std(xs: &[f64]) -> f64 {
    let m = mean(xs);
    (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() as f64 - 1.0)).sqrt()
}

/// (x − mean(xs)) / F with the rules of docs/advantages.md, "Normalisation"; `raw_singleton` is
/// verl-agent's episode rule.
fn relative(x: f64, xs: &[f64], cfg: &AdvantageConfig, raw_singleton: bool) -> f64 {
    let f = |std: f64| match cfg.norm {
        Norm::Std => std + cfg.epsilon,
        Norm::Fixed => cfg.fixed_norm,
    };
    if xs.len() == 1 {
        return if raw_singleton { x / f(1.0) } else { 0.0 };
    }
    if xs.iter().all(|&y| y == xs[0]) {
        return 0.0;
    }
    (x - mean(xs)) / f(sample_std(xs))
}

fn pen(cfg: &AdvantageConfig, valid: bool) -> f64 {
    if valid {
        0.0
    } else {
        cfg.invalid_action_penalty
    }
}

/// R_t = Σ_{k≥t} γ^{k−t} r_k, summed forwards.
fn ret(t: &Traj, i: usize, cfg: &AdvantageConfig) -> f64 {
    let verl = cfg.convention == Convention::VerlAgent;
    let mut total = 0.0;
    for (k, (_, r, v)) in t.steps.iter().enumerate().skip(i) {
        let r = if verl { *r } else { r - pen(cfg, *v) };
        total += cfg.gamma.powi((k - i) as i32) * r;
    }
    if verl {
        total - pen(cfg, t.steps[i].2)
    } else {
        total
    }
}

fn score(t: &Traj, cfg: &AdvantageConfig) -> f64 {
    t.steps.iter().map(|(_, r, v)| r - pen(cfg, *v)).sum()
}

fn naive(trajs: &[Traj], cfg: &AdvantageConfig) -> Vec<StepAdvantage> {
    let mut out = Vec::new();
    for t in trajs {
        let peers: Vec<&Traj> = trajs.iter().filter(|u| u.group == t.group).collect();
        let clusters = naive_clusters(&peers, cfg.anchor_similarity);
        for i in 0..t.steps.len() {
            let episode = match (cfg.estimator, cfg.convention) {
                (Estimator::Rloo, _) => {
                    let others: Vec<f64> = peers
                        .iter()
                        .filter(|u| u.name != t.name)
                        .map(|u| score(u, cfg))
                        .collect();
                    let all: Vec<f64> = peers.iter().map(|u| score(u, cfg)).collect();
                    if others.is_empty() || all.iter().all(|&x| x == all[0]) {
                        0.0
                    } else {
                        score(t, cfg) - mean(&others)
                    }
                }
                (_, Convention::Paper) => {
                    let all: Vec<f64> = peers.iter().map(|u| score(u, cfg)).collect();
                    relative(score(t, cfg), &all, cfg, false)
                }
                (_, Convention::VerlAgent) => {
                    let raw = |u: &Traj| u.steps.iter().map(|s| s.1).sum::<f64>();
                    let rows: Vec<f64> = peers
                        .iter()
                        .flat_map(|u| u.steps.iter().map(move |s| raw(u) - pen(cfg, s.2)))
                        .collect();
                    relative(raw(t) - pen(cfg, t.steps[i].2), &rows, cfg, true)
                }
            };
            let r = ret(t, i, cfg);
            let mine = clusters[&(t.name.clone(), i)];
            let members: Vec<f64> = peers
                .iter()
                .flat_map(|u| (0..u.steps.len()).map(move |k| (*u, k)))
                .filter(|(u, k)| clusters[&(u.name.clone(), *k)] == mine)
                .map(|(u, k)| ret(u, k, cfg))
                .collect();
            let step = if cfg.estimator == Estimator::Gigpo {
                relative(r, &members, cfg, false)
            } else {
                0.0
            };
            let w = cfg.step_advantage_weight;
            let advantage = match (cfg.estimator, cfg.combine) {
                (Estimator::Gigpo, Combine::Additive) => episode + w * step,
                (Estimator::Gigpo, Combine::Convex) => w * episode + (1.0 - w) * step,
                _ => episode,
            };
            out.push(StepAdvantage {
                advantage,
                episode_advantage: episode,
                step_advantage: step,
                ret: r,
            });
        }
    }
    out
}

/// Cluster index of every (trajectory, step) of one episode group: exact text, or greedy
/// similarity against each cluster's first member in trajectory-then-time order.
fn naive_clusters(peers: &[&Traj], sim: Option<f64>) -> HashMap<(String, usize), usize> {
    let mut reps: Vec<String> = Vec::new();
    let mut out = HashMap::new();
    for u in peers {
        for (k, (a, _, _)) in u.steps.iter().enumerate() {
            let found = reps.iter().position(|rep| match sim {
                None => rep == a,
                Some(s) => similarity::ratio(a, rep) >= s,
            });
            let c = found.unwrap_or_else(|| {
                reps.push(a.clone());
                reps.len() - 1
            });
            out.insert((u.name.clone(), k), c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn reward() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.1),
        Just(1.0),
        Just(10.0),
        Just(0.9),
        -20.0..20.0f64,
    ]
}

fn anchor() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("# P _ #".to_owned()),
        Just("# _ P #".to_owned()),
        Just("# P X #".to_owned()),
        Just("kitchen".to_owned()),
        Just("kitchen!".to_owned()),
        "[a-c]{0,3}",
    ]
}

fn trajs() -> impl Strategy<Value = Vec<Traj>> {
    let steps = prop::collection::vec((anchor(), reward(), prop::bool::weighted(0.85)), 1..7);
    let group = prop::collection::vec(steps, 1..6);
    prop::collection::vec(group, 1..4).prop_map(|groups| {
        let mut out = Vec::new();
        for (g, group) in groups.into_iter().enumerate() {
            for (i, steps) in group.into_iter().enumerate() {
                out.push(Traj {
                    group: format!("g{g}"),
                    name: format!("t{i}"),
                    steps,
                });
            }
        }
        out
    })
}

fn config() -> impl Strategy<Value = AdvantageConfig> {
    (
        prop_oneof![
            Just(Estimator::Gigpo),
            Just(Estimator::Grpo),
            Just(Estimator::Rloo)
        ],
        prop_oneof![Just(Norm::Std), Just(Norm::Fixed)],
        prop_oneof![Just(Combine::Additive), Just(Combine::Convex)],
        prop_oneof![Just(Convention::Paper), Just(Convention::VerlAgent)],
        0.0..=1.0f64,
        0.0..=1.0f64,
        prop_oneof![Just(None), (0.3..0.95f64).prop_map(Some)],
        prop_oneof![Just(0.1), Just(0.0), 0.0..1.0f64],
    )
        .prop_map(
            |(estimator, norm, combine, convention, gamma, w, sim, pen)| AdvantageConfig {
                estimator,
                norm,
                combine,
                convention,
                gamma,
                step_advantage_weight: w,
                anchor_similarity: sim,
                invalid_action_penalty: pen,
                fixed_norm: 1.0,
                ..AdvantageConfig::default()
            },
        )
}

fn all_finite(s: &StepAdvantage) -> bool {
    [s.ret, s.episode_advantage, s.step_advantage, s.advantage]
        .iter()
        .all(|v| v.is_finite())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn engine_matches_naive_formulas(ts in trajs(), cfg in config()) {
        let got = compute(&build(&ts), &cfg).unwrap();
        let want = naive(&ts, &cfg);
        prop_assert_eq!(got.steps.len(), want.len());
        for (i, (g, w)) in got.steps.iter().zip(&want).enumerate() {
            prop_assert!(close(g.ret, w.ret), "step {}: return {} vs {}", i, g.ret, w.ret);
            prop_assert!(close(g.episode_advantage, w.episode_advantage),
                "step {}: A^E {} vs {}", i, g.episode_advantage, w.episode_advantage);
            prop_assert!(close(g.step_advantage, w.step_advantage),
                "step {}: A^S {} vs {}", i, g.step_advantage, w.step_advantage);
            prop_assert!(close(g.advantage, w.advantage), "step {}: A {} vs {}", i, g.advantage, w.advantage);
        }
    }

    #[test]
    fn episode_advantage_is_centred_and_unit_std(ts in trajs()) {
        let cfg = AdvantageConfig::default();
        let batch = build(&ts);
        let adv = compute(&batch, &cfg).unwrap();
        for g in batch.groups() {
            let a: Vec<f64> = g.trajectories.iter()
                .map(|t| adv.steps[batch.trajectories()[t.index()].steps.start].episode_advantage)
                .collect();
            let scores: Vec<f64> = g.trajectories.iter()
                .map(|t| batch.trajectory_steps(*t).iter()
                    .map(|s| s.reward - if s.action_valid { 0.0 } else { 0.1 }).sum::<f64>())
                .collect();
            // mean(A^E) = Σ(R − mean)/(n·F): zero up to rounding of the scores, amplified by 1/F.
            let f = if a.len() >= 2 { sample_std(&scores) + 1e-6 } else { 1.0 };
            let scale = 1.0 + scores.iter().fold(0.0f64, |m, s| m.max(s.abs()));
            prop_assert!((mean(&a) * f).abs() < 1e-12 * scale, "group {} mean {}", g.name, mean(&a));
            if a.len() >= 2 && scores.iter().any(|&s| s != scores[0]) {
                let std = sample_std(&scores);
                // std(A^E) = std / (std + ε)
                // std(A^E) = std / (std + ε), up to rounding of the scores amplified by 1/std.
                prop_assert!((sample_std(&a) - std / (std + 1e-6)).abs() < 1e-12 * (1.0 + scale / std));
                prop_assert!((sample_std(&a) - 1.0).abs() < 1e-4 / std.min(1.0));
            }
        }
    }

    #[test]
    fn permuting_a_group_permutes_its_advantages(ts in trajs(), seed in any::<u64>()) {
        let cfg = AdvantageConfig::default();
        let mut shuffled = ts.clone();
        // A deterministic permutation of each group's trajectories (groups stay in place).
        let mut order: Vec<usize> = (0..ts.len()).collect();
        order.sort_by_key(|&i| (ts[i].group.clone(), (i as u64).wrapping_mul(seed | 1).rotate_left(17)));
        for (slot, &i) in order.iter().enumerate() { shuffled[slot] = ts[i].clone(); }
        let a = compute(&build(&ts), &cfg).unwrap();
        let b = compute(&build(&shuffled), &cfg).unwrap();
        let by_name = |trajs: &[Traj], adv: &Advantages| {
            let mut m = HashMap::new();
            let mut i = 0;
            for t in trajs {
                m.insert((t.group.clone(), t.name.clone()), adv.steps[i..i + t.steps.len()].to_vec());
                i += t.steps.len();
            }
            m
        };
        let (ma, mb) = (by_name(&ts, &a), by_name(&shuffled, &b));
        for (k, va) in &ma {
            for (x, y) in va.iter().zip(&mb[k]) {
                prop_assert!(close(x.advantage, y.advantage) && close(x.step_advantage, y.step_advantage));
                prop_assert!(close(x.episode_advantage, y.episode_advantage) && x.ret == y.ret);
            }
        }
        prop_assert_eq!(a.diagnostics.step_groups, b.diagnostics.step_groups);
        prop_assert_eq!(&a.diagnostics.step_group_sizes, &b.diagnostics.step_group_sizes);
    }

    #[test]
    fn gigpo_with_zero_weight_is_grpo(ts in trajs(), convention in prop_oneof![Just(Convention::Paper), Just(Convention::VerlAgent)]) {
        let batch = build(&ts);
        let gigpo = AdvantageConfig { step_advantage_weight: 0.0, convention, ..Default::default() };
        let grpo = AdvantageConfig { estimator: Estimator::Grpo, convention, ..Default::default() };
        let a = compute(&batch, &gigpo).unwrap();
        let b = compute(&batch, &grpo).unwrap();
        for (x, y) in a.steps.iter().zip(&b.steps) {
            prop_assert_eq!(x.advantage, y.advantage);
        }
    }

    /// `levels = episode` is GRPO for any ω, part for part; `levels = step` is ω·A^S with the
    /// A^S of `levels = both` (Eq. 8 with one term dropped).
    #[test]
    fn levels_drop_one_term(ts in trajs(), w in 0.0..=3.0f64, convention in prop_oneof![Just(Convention::Paper), Just(Convention::VerlAgent)]) {
        let batch = build(&ts);
        let both = AdvantageConfig { step_advantage_weight: w, convention, ..Default::default() };
        let episode = AdvantageConfig { levels: Levels::Episode, ..both.clone() };
        let step = AdvantageConfig { levels: Levels::Step, ..both.clone() };
        let grpo = AdvantageConfig { estimator: Estimator::Grpo, ..both.clone() };
        let b = compute(&batch, &both).unwrap();
        let e = compute(&batch, &episode).unwrap();
        let s = compute(&batch, &step).unwrap();
        let g = compute(&batch, &grpo).unwrap();
        prop_assert_eq!(&e.steps, &g.steps);
        for (x, y) in s.steps.iter().zip(&b.steps) {
            prop_assert_eq!(x.advantage, w * y.step_advantage);
            prop_assert_eq!(x.step_advantage, y.step_advantage);
            prop_assert_eq!(x.episode_advantage, 0.0);
            prop_assert_eq!(x.ret, y.ret);
        }
    }

    #[test]
    fn any_reward_gives_result_or_error_never_panic(
        rewards in prop::collection::vec(prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::MAX), -1e300..1e300f64], 1..10)
    ) {
        let mut b = BatchBuilder::new();
        b.push_trajectory("g", "a", rewards.iter().map(|&r| StepInput::new("s", r))).unwrap();
        b.push_trajectory("g", "b", [StepInput::new("s", 1.0)]).unwrap();
        let finite = rewards.iter().all(|r| r.is_finite());
        match compute(&b.build(), &AdvantageConfig::default()) {
            Ok(adv) => {
                prop_assert!(finite);
                prop_assert!(adv.steps.iter().all(all_finite));
            }
            Err(AdvantageError::NonFiniteReward { .. }) => prop_assert!(!finite),
            Err(AdvantageError::ScoreOverflow { .. } | AdvantageError::NonFiniteResult { .. }) => {
                prop_assert!(finite)
            }
            Err(other) => prop_assert!(false, "unexpected error {}", other),
        }
    }

    /// One step per trajectory cannot overflow a return, so any finite rewards give finite
    /// advantages under every estimator with `norm = std` (RLOO is not normalised: its
    /// `R_i − mean_{j≠i} R_j` stays finite for rewards up to a quarter of `f64::MAX`).
    #[test]
    fn finite_single_step_rewards_give_finite_advantages(
        rewards in prop::collection::vec(prop_oneof![
            Just(f64::MAX), Just(-f64::MAX), Just(1e308), Just(-1e308), Just(0.0),
            Just(f64::MIN_POSITIVE), Just(5e-324), -f64::MAX..f64::MAX, -10.0..10.0f64,
        ], 1..8),
        estimator in prop_oneof![Just(Estimator::Gigpo), Just(Estimator::Grpo), Just(Estimator::Rloo)],
        convention in prop_oneof![Just(Convention::Paper), Just(Convention::VerlAgent)],
    ) {
        let shrink = if estimator == Estimator::Rloo { 0.25 } else { 1.0 };
        let mut b = BatchBuilder::new();
        for (i, &r) in rewards.iter().enumerate() {
            b.push_trajectory("g", &format!("t{i}"), [StepInput::new("s", r * shrink)]).unwrap();
        }
        let cfg = AdvantageConfig { estimator, convention, ..AdvantageConfig::default() };
        let adv = compute(&b.build(), &cfg);
        prop_assert!(adv.is_ok(), "{:?}", adv.err());
        prop_assert!(adv.unwrap().steps.iter().all(all_finite));
    }
}
