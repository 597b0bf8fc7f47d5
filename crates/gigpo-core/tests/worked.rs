//! Hand-worked examples with numbers written out.

use gigpo_core::*;

const EPS: f64 = 1e-12;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Steps as (anchor, reward, action_valid).
type Steps<'a> = &'a [(&'a str, f64, bool)];

fn batch(trajs: &[(&str, &str, Steps)]) -> Batch {
    let mut b = BatchBuilder::new();
    for (g, t, steps) in trajs {
        let steps = steps.iter().map(|&(a, r, v)| StepInput {
            anchor: a,
            reward: r,
            action_valid: v,
            action: None,
        });
        b.push_trajectory(g, t, steps).unwrap();
    }
    b.build()
}

/// The seed's web-page example: three actions from the same results page lead to success soon,
/// success later, and failure. Their step advantages must rank in that order.
#[test]
fn web_page_example_ranks_actions() {
    let soon: &[(&str, f64, bool)] = &[
        ("home", 0.0, true),
        ("results", 0.0, true),
        ("item-1", 1.0, true),
    ];
    let later: &[(&str, f64, bool)] = &[
        ("home", 0.0, true),
        ("results", 0.0, true),
        ("item-2", 0.0, true),
        ("item-1", 1.0, true),
    ];
    let fail: &[(&str, f64, bool)] = &[
        ("home", 0.0, true),
        ("results", 0.0, true),
        ("page-2", 0.0, true),
        ("page-2b", 0.0, true),
    ];
    let b = batch(&[
        ("q", "soon", soon),
        ("q", "later", later),
        ("q", "fail", fail),
    ]);
    let cfg = AdvantageConfig {
        gamma: 0.95,
        ..AdvantageConfig::default()
    };
    let adv = compute(&b, &cfg).unwrap();
    let at_results = [1, 4, 8].map(|i| adv.steps[i]);
    // R_t at the results page: 0.95·1, 0.95²·1, 0.
    assert!(close(at_results[0].ret, 0.95));
    assert!(close(at_results[1].ret, 0.9025));
    assert_eq!(at_results[2].ret, 0.0);
    // mean = 0.6175; sample std = sqrt(((0.3325)² + (0.285)² + (0.6175)²) / 2) = 0.5356420...
    let std = ((0.3325f64.powi(2) + 0.285f64.powi(2) + 0.6175f64.powi(2)) / 2.0).sqrt();
    assert!(close(at_results[0].step_advantage, 0.3325 / (std + 1e-6)));
    assert!(close(at_results[1].step_advantage, 0.285 / (std + 1e-6)));
    assert!(close(at_results[2].step_advantage, -0.6175 / (std + 1e-6)));
    assert!(at_results[0].step_advantage > at_results[1].step_advantage);
    assert!(at_results[1].step_advantage > at_results[2].step_advantage);
    // "item-1" is reached by two trajectories and forms its own group of two with equal returns.
    assert_eq!(adv.steps[2].step_advantage, 0.0);
    assert_eq!(adv.steps[6].step_advantage, 0.0);
}

#[test]
fn group_of_one_and_all_equal_give_exactly_zero() {
    // 0.1 three times: the float mean is not exactly 0.1, but the advantage must be exactly 0.
    let same: &[(&str, f64, bool)] = &[("s", 0.1, true)];
    let b = batch(&[
        ("alone", "t", same),
        ("eq", "a", same),
        ("eq", "b", same),
        ("eq", "c", same),
    ]);
    for estimator in [Estimator::Gigpo, Estimator::Grpo, Estimator::Rloo] {
        for norm in [Norm::Std, Norm::Fixed] {
            let cfg = AdvantageConfig {
                estimator,
                norm,
                ..AdvantageConfig::default()
            };
            let adv = compute(&b, &cfg).unwrap();
            for s in &adv.steps {
                assert_eq!(s.advantage, 0.0, "{estimator:?} {norm:?}");
                assert_eq!(s.episode_advantage, 0.0);
                assert_eq!(s.step_advantage, 0.0);
            }
        }
    }
}

#[test]
fn revisits_join_one_step_group() {
    let looped: &[(&str, f64, bool)] = &[
        ("x", 0.0, true),
        ("y", 0.0, true),
        ("x", 0.0, true),
        ("g", 1.0, true),
    ];
    let other: &[(&str, f64, bool)] = &[("x", 0.0, true), ("z", 0.0, true)];
    let b = batch(&[("g", "loop", looped), ("g", "other", other)]);
    let adv = compute(&b, &AdvantageConfig::default()).unwrap();
    assert_eq!(adv.step_group[0], adv.step_group[2]);
    assert_eq!(adv.step_group[0], adv.step_group[4]);
    assert_eq!(adv.diagnostics.step_group_sizes.get(&3), Some(&1));
    // Returns at x: 0.95³, 0.95, 0 — all three compared in one group.
    let xs = [adv.steps[0].ret, adv.steps[2].ret, adv.steps[4].ret];
    assert!(close(xs[0], 0.857375) && close(xs[1], 0.95) && xs[2] == 0.0);
    assert!(adv.steps[2].step_advantage > adv.steps[0].step_advantage);
    assert!(adv.steps[0].step_advantage > adv.steps[4].step_advantage);
}

#[test]
fn same_anchor_in_different_episode_groups_is_not_grouped() {
    let s: &[(&str, f64, bool)] = &[("x", 1.0, true)];
    let t: &[(&str, f64, bool)] = &[("x", 0.0, true)];
    let b = batch(&[("g1", "a", s), ("g2", "b", t)]);
    let adv = compute(&b, &AdvantageConfig::default()).unwrap();
    assert_ne!(adv.step_group[0], adv.step_group[1]);
    assert_eq!(adv.diagnostics.step_group_share, 0.0);
}

#[test]
fn invalid_action_penalty_discounts_backwards() {
    let s: &[(&str, f64, bool)] = &[("a", 0.0, true), ("b", 0.0, false), ("c", 1.0, true)];
    let b = batch(&[("g", "t", s)]);
    let adv = compute(&b, &AdvantageConfig::default()).unwrap();
    // r' = [0, -0.1, 1]; R = [0.95·(-0.1) + 0.95²·1, -0.1 + 0.95, 1]
    assert!(close(adv.steps[0].ret, -0.095 + 0.9025));
    assert!(close(adv.steps[1].ret, 0.85));
    assert!(close(adv.steps[2].ret, 1.0));
}

#[test]
fn rloo_leave_one_out() {
    let r = |x: f64| -> Vec<(&'static str, f64, bool)> { vec![("s", x, true)] };
    let (a, b_, c) = (r(1.0), r(0.0), r(4.0));
    let b = batch(&[("g", "a", &a), ("g", "b", &b_), ("g", "c", &c)]);
    let cfg = AdvantageConfig {
        estimator: Estimator::Rloo,
        invalid_action_penalty: 0.0,
        ..Default::default()
    };
    let adv = compute(&b, &cfg).unwrap();
    // 1 − (0+4)/2 = −1; 0 − (1+4)/2 = −2.5; 4 − (1+0)/2 = 3.5
    assert!(close(adv.steps[0].advantage, -1.0));
    assert!(close(adv.steps[1].advantage, -2.5));
    assert!(close(adv.steps[2].advantage, 3.5));
}

#[test]
fn fixed_norm_and_convex_combine() {
    let w: &[(&str, f64, bool)] = &[("s", 0.0, true), ("w", 1.0, true)];
    let l: &[(&str, f64, bool)] = &[("s", 0.0, true), ("l", 0.0, true)];
    let b = batch(&[("g", "w", w), ("g", "l", l)]);
    let cfg = AdvantageConfig {
        norm: Norm::Fixed,
        fixed_norm: 2.0,
        combine: Combine::Convex,
        step_advantage_weight: 0.25,
        ..Default::default()
    };
    let adv = compute(&b, &cfg).unwrap();
    // A^E = ±0.5/2 = ±0.25; A^S at s: R = 0.95 vs 0 → ±0.475/2 = ±0.2375.
    assert!(close(adv.steps[0].episode_advantage, 0.25));
    assert!(close(adv.steps[0].step_advantage, 0.2375));
    assert!(close(adv.steps[0].advantage, 0.25 * 0.25 + 0.75 * 0.2375));
    assert!(close(
        adv.steps[2].advantage,
        -(0.25 * 0.25 + 0.75 * 0.2375)
    ));
    // The second steps are in groups of one: A^S = 0, A = ω·A^E.
    assert!(close(adv.steps[1].advantage, 0.0625));
}

/// The ablations of Eq. 8 on the example above (F = 2): `episode` keeps A^E = ±0.25 alone,
/// `step` keeps ω·A^S = ±2·0.2375 alone, and ω = 0 gives GRPO's advantage.
#[test]
fn levels_keep_one_term() {
    let w: &[(&str, f64, bool)] = &[("s", 0.0, true), ("w", 1.0, true)];
    let l: &[(&str, f64, bool)] = &[("s", 0.0, true), ("l", 0.0, true)];
    let b = batch(&[("g", "w", w), ("g", "l", l)]);
    let cfg = |levels, weight| AdvantageConfig {
        norm: Norm::Fixed,
        fixed_norm: 2.0,
        step_advantage_weight: weight,
        levels,
        ..Default::default()
    };
    let both = compute(&b, &cfg(Levels::Both, 2.0)).unwrap();
    assert!(close(both.steps[0].advantage, 0.25 + 2.0 * 0.2375));
    let episode = compute(&b, &cfg(Levels::Episode, 2.0)).unwrap();
    let step = compute(&b, &cfg(Levels::Step, 2.0)).unwrap();
    let grpo = compute(
        &b,
        &AdvantageConfig {
            estimator: Estimator::Grpo,
            ..cfg(Levels::Both, 2.0)
        },
    )
    .unwrap();
    let zero_weight = compute(&b, &cfg(Levels::Both, 0.0)).unwrap();
    for i in 0..4 {
        let (e, s, g) = (episode.steps[i], step.steps[i], grpo.steps[i]);
        assert_eq!(e, g, "step {i}");
        assert_eq!(e.advantage, both.steps[i].episode_advantage);
        assert_eq!(e.step_advantage, 0.0);
        assert_eq!(s.advantage, 2.0 * both.steps[i].step_advantage);
        assert_eq!(s.episode_advantage, 0.0);
        assert_eq!(zero_weight.steps[i].advantage, g.advantage);
    }
    assert!(close(episode.steps[0].advantage, 0.25));
    assert!(close(step.steps[0].advantage, 0.475));
    assert!(close(step.steps[2].advantage, -0.475));
    assert_eq!(step.steps[1].advantage, 0.0, "a step group of one");
}

#[test]
fn levels_are_parsed_and_need_gigpo() {
    assert_eq!("Step".parse::<Levels>().unwrap(), Levels::Step);
    assert_eq!("episode".parse::<Levels>().unwrap(), Levels::Episode);
    let err = "steps".parse::<Levels>().unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown levels \"steps\"; expected one of: both, episode, step"
    );
    let cfg = AdvantageConfig {
        estimator: Estimator::Rloo,
        levels: Levels::Step,
        ..Default::default()
    };
    assert_eq!(
        cfg.validate().unwrap_err().to_string(),
        "levels = step: needs estimator = gigpo (grpo and rloo have one level only)"
    );
}

/// verl-agent's conventions on a worked example: episode statistics over step rows, a group of one
/// row keeps its raw score, the penalty subtracted after discounting and from each row's score,
/// `norm = fixed` (F = 1), ω = 1.
#[test]
fn verl_agent_preset_worked_example() {
    let t0: &[(&str, f64, bool)] = &[("A", -0.1, true), ("B", 0.9, true), ("C", 10.0, true)];
    let t1: &[(&str, f64, bool)] = &[("A", -0.1, false), ("A", -0.1, true)];
    let h: &[(&str, f64, bool)] = &[("Z", 1.0, true)];
    let b = batch(&[("g", "t0", t0), ("g", "t1", t1), ("h", "only", h)]);
    let adv = compute(&b, &AdvantageConfig::verl_agent()).unwrap();
    // Row scores in g: t0 rows 10.8 ×3; t1 rows −0.2 − 0.1 = −0.3 (invalid) and −0.2.
    // Mean over the 5 rows = 31.9 / 5 = 6.38.
    let episode = [4.42, 4.42, 4.42, -6.68, -6.58, 1.0];
    // Raw discounted returns: t0 = [9.78, 10.4, 10]; t1 = [−0.195 − 0.1 (penalty), −0.1].
    let returns = [9.78, 10.4, 10.0, -0.295, -0.1, 1.0];
    // Group "A" = {9.78, −0.295, −0.1}, mean 3.1283333…; B, C, Z are groups of one → 0.
    let m = 9.385 / 3.0;
    let step = [9.78 - m, 0.0, 0.0, -0.295 - m, -0.1 - m, 0.0];
    for i in 0..6 {
        let s = adv.steps[i];
        assert!(close(s.episode_advantage, episode[i]), "step {i}: {s:?}");
        assert!(close(s.ret, returns[i]), "step {i}: {s:?}");
        assert!(close(s.step_advantage, step[i]), "step {i}: {s:?}");
        assert!(close(s.advantage, episode[i] + step[i]), "step {i}: {s:?}");
    }
}

#[test]
fn paper_convention_on_the_same_example_differs() {
    let t0: &[(&str, f64, bool)] = &[("A", -0.1, true), ("B", 0.9, true), ("C", 10.0, true)];
    let t1: &[(&str, f64, bool)] = &[("A", -0.1, false), ("A", -0.1, true)];
    let h: &[(&str, f64, bool)] = &[("Z", 1.0, true)];
    let b = batch(&[("g", "t0", t0), ("g", "t1", t1), ("h", "only", h)]);
    let cfg = AdvantageConfig {
        norm: Norm::Fixed,
        ..Default::default()
    };
    let adv = compute(&b, &cfg).unwrap();
    // Scores over trajectories: 10.8 and −0.3 (penalised), mean 5.25; the lone group gives 0.
    assert!(close(adv.steps[0].episode_advantage, 5.55));
    assert!(close(adv.steps[3].episode_advantage, -5.55));
    assert_eq!(adv.steps[5].episode_advantage, 0.0);
    // Penalty before discounting: t1 step 0: −0.2 + 0.95·(−0.1) = −0.295 (same here by chance
    // of a last-step-free penalty), step 1: −0.1.
    assert!(close(adv.steps[3].ret, -0.295));
}

#[test]
fn diagnostics_count_groups() {
    let a: &[(&str, f64, bool)] = &[("s", 0.0, true), ("t", 1.0, true)];
    let c: &[(&str, f64, bool)] = &[("s", 0.0, true), ("u", 0.0, true)];
    let d: &[(&str, f64, bool)] = &[("s", 0.0, true), ("t", 1.0, true)];
    let b = batch(&[("g", "a", a), ("g", "c", c), ("g", "d", d)]);
    let adv = compute(&b, &AdvantageConfig::default()).unwrap();
    let dg = &adv.diagnostics;
    assert_eq!(dg.step_groups, 3); // s(3), t(2), u(1)
    assert_eq!(dg.step_group_sizes.get(&3), Some(&1));
    assert_eq!(dg.step_group_sizes.get(&2), Some(&1));
    assert_eq!(dg.step_group_sizes.get(&1), Some(&1));
    assert!(close(dg.step_group_share, 5.0 / 6.0));
    // t's two returns are both 1.0: one of the two multi-member groups has zero variance.
    assert!(close(dg.zero_variance_step_group_share, 0.5));
    assert_eq!(dg.zero_variance_episode_group_share, 0.0);
}

#[test]
fn errors_name_group_trajectory_and_step() {
    let bad: &[(&str, f64, bool)] = &[("s", 0.0, true), ("s", f64::NAN, true)];
    let b = batch(&[("g7", "t3", bad)]);
    let err = compute(&b, &AdvantageConfig::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("\"g7\"") && msg.contains("\"t3\"") && msg.contains("step 1"),
        "{msg}"
    );
    let inf: &[(&str, f64, bool)] = &[("s", f64::INFINITY, true)];
    assert!(matches!(
        compute(&batch(&[("g", "t", inf)]), &AdvantageConfig::default()),
        Err(AdvantageError::NonFiniteReward { step: 0, .. })
    ));
    let empty: &[(&str, f64, bool)] = &[];
    let err = compute(&batch(&[("g", "t", empty)]), &AdvantageConfig::default()).unwrap_err();
    assert!(matches!(err, AdvantageError::EmptyTrajectory { .. }));
    let mut bb = BatchBuilder::new();
    bb.group("lonely").unwrap();
    let err = compute(&bb.build(), &AdvantageConfig::default()).unwrap_err();
    assert_eq!(
        err,
        AdvantageError::EmptyGroup {
            group: "lonely".into()
        }
    );
    let mut bb = BatchBuilder::new();
    bb.push_trajectory("g", "t", [StepInput::new("s", 0.0)])
        .unwrap();
    assert!(matches!(
        bb.push_trajectory("g", "t", [StepInput::new("s", 0.0)]),
        Err(AdvantageError::DuplicateTrajectory { .. })
    ));
}

#[test]
fn numbered_groups_give_what_named_ones_give() {
    let mut named = BatchBuilder::new();
    let mut numbered = BatchBuilder::new();
    for (g, t, last) in [
        (0, 0, 1.0),
        (0, 1, 0.0),
        (1, 0, 2.0),
        (1, 1, 1.0),
        (1, 2, 1.0),
    ] {
        let steps = [StepInput::new("start", -0.1), StepInput::new("end", last)];
        named
            .push_trajectory(&format!("g{g}"), &format!("t{t}"), steps)
            .unwrap();
        numbered.push_numbered(g, t, steps).unwrap();
    }
    let cfg = AdvantageConfig::default();
    let named = compute(&named.build(), &cfg).unwrap();
    let numbered = compute(&numbered.build(), &cfg).unwrap();
    assert_eq!(named.steps, numbered.steps);
    assert_eq!(named.step_group, numbered.step_group);
    let mut bb = BatchBuilder::new();
    bb.push_numbered(3, 1, [StepInput::new("s", 0.0)]).unwrap();
    let err = bb
        .push_numbered(3, 1, [StepInput::new("s", 0.0)])
        .unwrap_err();
    assert_eq!(
        err,
        AdvantageError::DuplicateTrajectory {
            group: "3".into(),
            trajectory: "1".into()
        }
    );
}

#[test]
fn config_ranges_are_checked() {
    let ok: &[(&str, f64, bool)] = &[("s", 0.0, true)];
    let b = batch(&[("g", "t", ok)]);
    let bad = [
        AdvantageConfig {
            gamma: 1.5,
            ..Default::default()
        },
        AdvantageConfig {
            gamma: -0.1,
            ..Default::default()
        },
        AdvantageConfig {
            gamma: f64::NAN,
            ..Default::default()
        },
        AdvantageConfig {
            step_advantage_weight: -1.0,
            ..Default::default()
        },
        AdvantageConfig {
            step_advantage_weight: 1.5,
            combine: Combine::Convex,
            ..Default::default()
        },
        AdvantageConfig {
            anchor_similarity: Some(1.0),
            ..Default::default()
        },
        AdvantageConfig {
            anchor_similarity: Some(0.0),
            ..Default::default()
        },
        AdvantageConfig {
            fixed_norm: 0.0,
            ..Default::default()
        },
    ];
    for cfg in bad {
        assert!(
            matches!(compute(&b, &cfg), Err(AdvantageError::InvalidConfig { .. })),
            "{cfg:?}"
        );
    }
    assert!(compute(
        &b,
        &AdvantageConfig {
            gamma: 1.0,
            ..Default::default()
        }
    )
    .is_ok());
    let err = "ppo".parse::<Estimator>().unwrap_err().to_string();
    assert!(err.contains("ppo") && err.contains("gigpo"), "{err}");
}

#[test]
fn similarity_grouping_joins_near_identical_anchors() {
    let a: &[(&str, f64, bool)] = &[
        ("You are in the kitchen. A fridge.", 0.0, true),
        ("end", 1.0, true),
    ];
    let c: &[(&str, f64, bool)] = &[
        ("You are in the kitchen. A fridge!", 0.0, true),
        ("fail", 0.0, true),
    ];
    let d: &[(&str, f64, bool)] = &[("Completely different text here", 0.0, true)];
    let b = batch(&[("g", "a", a), ("g", "c", c), ("g", "d", d)]);
    let exact = compute(&b, &AdvantageConfig::default()).unwrap();
    assert_ne!(exact.step_group[0], exact.step_group[2]);
    let cfg = AdvantageConfig {
        anchor_similarity: Some(0.9),
        ..Default::default()
    };
    let sim = compute(&b, &cfg).unwrap();
    assert_eq!(sim.step_group[0], sim.step_group[2]);
    assert_ne!(sim.step_group[0], sim.step_group[4]);
    assert!(sim.steps[0].step_advantage > 0.0 && sim.steps[2].step_advantage < 0.0);
}

/// Ratios recorded from CPython's difflib (tests/fixtures/difflib_ratios.json, made by
/// python/make_difflib_fixture.py), including strings of ≥ 200 characters where autojunk applies.
#[test]
fn difflib_ratio_matches_python() {
    let text = include_str!("fixtures/difflib_ratios.json");
    let cases: Vec<(String, String, f64)> = serde_json::from_str(text).unwrap();
    assert!(cases.len() >= 50);
    for (a, b, expected) in cases {
        let got = similarity::ratio(&a, &b);
        assert!(
            (got - expected).abs() < EPS,
            "ratio({a:?}, {b:?}) = {got}, python says {expected}"
        );
    }
}
