//! GiGPO on the built-in Sokoban, top to bottom, with the library's public calls: make the
//! policy, collect a rollout of episode groups, compute advantages, build training samples,
//! one PPO-clipped update with a KL penalty per iteration, evaluate on held-out levels.
//!
//! [`gigpo_train::Trainer`] runs this same loop and adds the warm start, checkpoints, metrics
//! files and plots; this file shows the loop alone, on a model small enough to train in
//! seconds in a debug build.
//!
//! ```sh
//! cargo run -p gigpo-train --example train_minimal
//! ```
//!
//! `cargo test --examples` runs it too (`test = true` in the crate's Cargo.toml).

use gigpo_model::AdamW;
use gigpo_train::config::TrainConfig;
use gigpo_train::eval::Evaluator;
use gigpo_train::policy::{initial_policy, reference_policy};
use gigpo_train::trainer::collect_iteration;
use gigpo_train::update::{score_samples, update};
use gigpo_train::Result;

/// The default configuration (tiny model, 6×6 Sokoban, GiGPO), made smaller.
fn config() -> Result<TrainConfig> {
    let mut cfg = TrainConfig::default();
    let changes = [
        ("iterations", "3"),
        // No warm start on solver demonstrations: RL from the random initial policy.
        ("sft.levels", "0"),
        // A one-layer model of width 32.
        ("model.tiny.hidden_size", "32"),
        ("model.tiny.num_layers", "1"),
        ("model.tiny.num_heads", "2"),
        ("model.tiny.num_kv_heads", "2"),
        ("model.tiny.intermediate_size", "64"),
        // 4 groups of 4 episodes of at most 8 steps.
        ("rollout.groups", "4"),
        ("rollout.num_generations", "4"),
        ("rollout.max_steps", "8"),
        // A KL penalty towards the initial policy (the tiny model's default is none).
        ("loss.beta", "0.01"),
        ("update.mini_batch_size", "32"),
        ("eval.levels", "8"),
        ("eval.random_rollouts", "4"),
    ];
    for (field, value) in changes {
        cfg.set(field, value)?;
    }
    // Every default that depends on the model written out, then checked.
    let cfg = cfg.resolved()?;
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> Result<()> {
    let cfg = config()?;

    // The policy; a frozen copy of it as the reference of the KL term; AdamW over its weights.
    let policy = initial_policy(&cfg)?;
    let reference = reference_policy(&cfg, &policy)?;
    let mut opt = AdamW::new(policy.named_trainable_vars().to_vec(), cfg.adamw())?;

    // The held-out levels (training never resets to one of them) and their baselines.
    let evaluator = Evaluator::new(cfg.eval_plan())?;
    let before = evaluator.evaluate(&policy)?;
    println!("held-out before: {}", before.summary());

    let update_plan = cfg.update_plan();
    for it in 1..=cfg.iterations {
        // Rollout: `rollout.groups` groups of `rollout.num_generations` episodes; the members
        // of a group start from one training level. Every episode runs to its end or to
        // `rollout.max_steps`, sampled by the policy.
        let mut rollout = collect_iteration(&cfg, &policy, evaluator.held_out(), it)?;

        // Advantages: each episode against its group, each step against the steps taken from
        // the same state in the group (anchor states); stored on each step.
        let advantages = rollout.assign_advantages(&cfg.algorithm)?;

        // Samples: one per step (its prompt, then its response); every response token carries
        // its step's advantage and the log-probability it was sampled with.
        let mut samples = rollout.samples(cfg.sample_layout)?;

        // log π_old and log π_ref of every sample, then the clipped update with the KL term.
        let mismatch = score_samples(&mut samples, &policy, reference.as_ref(), &update_plan)?;
        let step = update(&samples, &policy, &mut opt, &update_plan, it)?;

        let stats = rollout.stats();
        let d = &advantages.diagnostics;
        println!(
            "iteration {it}: success {:.2}  return {:.2}  invalid {:.2}  steps {}  \
             step groups {} ({:.0}% of steps in groups of 2+)  loss {:.4}  kl {:.5}  \
             clipped {:.3}  logprob mismatch {:.1e}",
            stats.success_rate,
            stats.mean_return,
            stats.invalid_action_rate,
            rollout.steps(),
            d.step_groups,
            100.0 * d.step_group_share,
            step.loss,
            step.kl,
            step.clip_fraction,
            mismatch.unwrap_or(0.0),
        );
    }

    // Held-out levels again: the policy greedy and sampled, beside the random policy and the
    // optimal solver on the same levels.
    let after = evaluator.evaluate(&policy)?;
    println!("held-out after:  {}", after.summary());
    Ok(())
}

#[test]
fn trains_and_evaluates() {
    main().unwrap();
}
