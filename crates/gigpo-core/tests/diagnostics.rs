//! The diagnostics on a small hand-made batch, every value worked out by hand.

use gigpo_core::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// Steps as (anchor, action, reward).
type Steps<'a> = &'a [(&'a str, Option<&'a str>, f64)];

fn batch(trajs: &[(&str, &str, Steps)]) -> Batch {
    let mut b = BatchBuilder::new();
    for (g, t, steps) in trajs {
        let steps = steps.iter().map(|&(anchor, action, reward)| StepInput {
            anchor,
            reward,
            action_valid: true,
            action,
        });
        b.push_trajectory(g, t, steps).unwrap();
    }
    b.build()
}

/// Group g: a = s(up) → x(left, +1); b = s(down) → y(up); c = s(up) → x(left).
/// Group h: d = z(up); e = z(up). All rewards 0 but a's last.
///
/// Step groups: s {a, b, c} (actions up, down, up; returns 0.5, 0, 0), x {a, c} (left, left;
/// 1, 0), y {b}, z {d, e} (up, up; 0, 0).
fn example() -> Batch {
    let (up, down, left) = (Some("up"), Some("down"), Some("left"));
    batch(&[
        ("g", "a", &[("s", up, 0.0), ("x", left, 1.0)]),
        ("g", "b", &[("s", down, 0.0), ("y", up, 0.0)]),
        ("g", "c", &[("s", up, 0.0), ("x", left, 0.0)]),
        ("h", "d", &[("z", up, 0.0)]),
        ("h", "e", &[("z", up, 0.0)]),
    ])
}

/// γ = 0.5, no penalty, F = 1: the advantages are plain differences from the mean.
fn config() -> AdvantageConfig {
    AdvantageConfig {
        gamma: 0.5,
        invalid_action_penalty: 0.0,
        norm: Norm::Fixed,
        ..AdvantageConfig::default()
    }
}

#[test]
fn shares_of_step_groups() {
    let d = compute(&example(), &config()).unwrap().diagnostics;
    assert_eq!(d.step_groups, 4);
    assert_eq!(d.step_group_sizes, [(1, 1), (2, 2), (3, 1)].into());
    // y alone of s, x, y, z.
    assert_eq!(d.singleton_step_group_share, 0.25);
    // 7 of the 8 steps are in s, x or z.
    assert_eq!(d.step_group_share, 7.0 / 8.0);
    // Of s, x, z: s and x have distinct returns, z has not.
    assert_eq!(d.distinct_return_step_group_share, 2.0 / 3.0);
    assert_eq!(d.zero_variance_step_group_share, 1.0 / 3.0);
    // Of s, x, z: only s saw two different actions.
    assert_eq!(d.distinct_action_step_group_share, Some(1.0 / 3.0));
    // h's two scores are equal.
    assert_eq!(d.zero_variance_episode_group_share, 0.5);
    let histogram = d.step_group_size_histogram();
    assert_eq!(
        histogram,
        [
            ("1", 0.25),
            ("2", 0.5),
            ("3-4", 0.25),
            ("5-8", 0.0),
            ("9+", 0.0)
        ]
    );
}

#[test]
fn mean_absolute_parts() {
    let d = compute(&example(), &config()).unwrap().diagnostics;
    // A^E: g's scores 1, 0, 0 (mean 1/3) give 2/3 on a's two steps and −1/3 on the four of b
    // and c; h gives 0. Mean |A^E| = (4/3 + 4/3) / 8 = 1/3.
    assert!(close(d.mean_abs_episode_advantage, 1.0 / 3.0));
    // A^S: s = 1/3, −1/6, −1/6 (returns 0.5, 0, 0); x = ±1/2; y, z = 0.
    // Mean |A^S| = (1/3 + 1/6 + 1/6 + 1/2 + 1/2) / 8 = 5/24.
    assert!(close(d.mean_abs_step_advantage, 5.0 / 24.0));
    // A = A^E + A^S: 1, 7/6, −1/2, −1/3, −1/2, −5/6, 0, 0. Mean |A| = (13/3) / 8 = 13/24.
    assert!(close(d.mean_abs_advantage, 13.0 / 24.0));
    // GRPO has no step part.
    let grpo = AdvantageConfig {
        estimator: Estimator::Grpo,
        ..config()
    };
    let d = compute(&example(), &grpo).unwrap().diagnostics;
    assert_eq!(d.mean_abs_step_advantage, 0.0);
    assert!(close(d.mean_abs_advantage, 1.0 / 3.0));
    // The step groups (and their shares) do not depend on the estimator.
    assert_eq!(d.distinct_action_step_group_share, Some(1.0 / 3.0));
}

#[test]
fn steps_without_an_action_key() {
    // No action anywhere: the share is unknown, not 0.
    let none = batch(&[
        ("g", "a", &[("s", None, 1.0)]),
        ("g", "b", &[("s", None, 0.0)]),
    ]);
    let d = compute(&none, &config()).unwrap().diagnostics;
    assert_eq!(d.distinct_action_step_group_share, None);
    assert_eq!(d.distinct_return_step_group_share, 1.0);
    // A step without a key is left out: s has one known action, t two.
    let mixed = batch(&[
        ("g", "a", &[("s", Some("up"), 1.0), ("t", Some("up"), 0.0)]),
        ("g", "b", &[("s", None, 0.0), ("t", Some("down"), 0.0)]),
    ]);
    let d = compute(&mixed, &config()).unwrap().diagnostics;
    assert_eq!(d.distinct_action_step_group_share, Some(0.5));
}

#[test]
fn an_empty_histogram_is_all_zero() {
    let d = compute(&BatchBuilder::new().build(), &config())
        .unwrap()
        .diagnostics;
    assert!(d.step_group_size_histogram().iter().all(|&(_, s)| s == 0.0));
    assert_eq!(d.distinct_action_step_group_share, None);
    assert_eq!(d.singleton_step_group_share, 0.0);
}
