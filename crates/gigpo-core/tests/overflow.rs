//! Finite inputs of any magnitude: results are finite and correct, or an error names the step.

use gigpo_core::*;

fn one_step_group(rewards: &[f64]) -> Batch {
    let mut b = BatchBuilder::new();
    for (i, &r) in rewards.iter().enumerate() {
        b.push_trajectory("g", &format!("t{i}"), [StepInput::new("s", r)])
            .unwrap();
    }
    b.build()
}

fn advantages(rewards: &[f64], cfg: &AdvantageConfig) -> Vec<f64> {
    let adv = compute(&one_step_group(rewards), cfg).unwrap();
    adv.steps.iter().map(|s| s.episode_advantage).collect()
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-9, "{got:?} vs {want:?}");
    }
}

#[test]
fn opposite_extremes_give_plus_minus_one_over_root_two() {
    let got = advantages(&[1e308, -1e308], &AdvantageConfig::default());
    let r = std::f64::consts::FRAC_1_SQRT_2;
    assert_close(&got, &[r, -r]);
}

#[test]
fn huge_rewards_match_the_same_rewards_scaled_down() {
    let cfg = AdvantageConfig {
        epsilon: 0.0,
        ..AdvantageConfig::default()
    };
    let small = advantages(&[-1.0, -1.0, 1.0], &cfg);
    for big in [1e308, f64::MAX] {
        let got = advantages(&[-big, -big, big], &AdvantageConfig::default());
        assert_close(&got, &small);
    }
}

#[test]
fn rloo_with_huge_rewards_is_finite() {
    let cfg = AdvantageConfig {
        estimator: Estimator::Rloo,
        ..AdvantageConfig::default()
    };
    let adv = compute(&one_step_group(&[1e308, -1e308, 0.0]), &cfg).unwrap();
    // A_i = N/(N−1) (R_i − mean): 1.5e308, -1.5e308, 0.
    let got: Vec<f64> = adv.steps.iter().map(|s| s.advantage).collect();
    assert_eq!(got[0], 1.5e308);
    assert_eq!(got[1], -1.5e308);
    assert_eq!(got[2], 0.0);
}

#[test]
fn tiny_fixed_norm_is_an_error_naming_the_step() {
    let cfg = AdvantageConfig {
        norm: Norm::Fixed,
        fixed_norm: 1e-320,
        ..AdvantageConfig::default()
    };
    let err = compute(&one_step_group(&[10.0, 0.0]), &cfg).unwrap_err();
    match &err {
        AdvantageError::NonFiniteResult {
            group,
            trajectory,
            step,
            ..
        } => assert_eq!((group.as_str(), trajectory.as_str(), *step), ("g", "t0", 0)),
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("fixed_norm"), "{err}");
}

#[test]
fn a_return_past_the_range_is_an_error_naming_the_trajectory() {
    let mut b = BatchBuilder::new();
    let huge = [StepInput::new("a", f64::MAX), StepInput::new("b", f64::MAX)];
    b.push_trajectory("g", "big", huge).unwrap();
    b.push_trajectory("g", "small", [StepInput::new("a", 0.0)])
        .unwrap();
    let err = compute(&b.build(), &AdvantageConfig::default()).unwrap_err();
    assert!(
        matches!(&err, AdvantageError::ScoreOverflow { trajectory, .. } if trajectory == "big"),
        "{err:?}"
    );
}
