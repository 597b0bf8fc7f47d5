//! End-to-end checks of the training loop on a very small setup.

use std::path::Path;

use gigpo_train::checkpoint;
use gigpo_train::config::TrainConfig;
use gigpo_train::metrics::{names, read_jsonl};
use gigpo_train::samples::SampleLayout;
use gigpo_train::tensorboard::read_events;
use gigpo_train::Trainer;

/// A configuration small enough to train in seconds.
fn small(run_dir: &Path) -> TrainConfig {
    let mut cfg = TrainConfig::default();
    let sets = [
        ("iterations", "2"),
        ("sft.levels", "0"),
        ("model.tiny.hidden_size", "16"),
        ("model.tiny.num_layers", "1"),
        ("model.tiny.num_heads", "2"),
        ("model.tiny.num_kv_heads", "2"),
        ("model.tiny.intermediate_size", "32"),
        ("rollout.groups", "2"),
        ("rollout.num_generations", "3"),
        ("rollout.max_steps", "3"),
        ("rollout.history_length", "1"),
        ("update.mini_batch_size", "8"),
        ("update.ppo_epochs", "2"),
        ("eval.every", "1"),
        ("eval.levels", "2"),
        ("checkpoint.every", "1"),
        ("checkpoint.keep", "2"),
    ];
    for (k, v) in sets {
        cfg.set(k, v).unwrap();
    }
    cfg.run_dir = run_dir.to_path_buf();
    cfg
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let (_, last) = checkpoint::list(dir).unwrap().pop().unwrap();
    let map = candle_core::safetensors::load(
        last.join("trainable.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut out: Vec<(String, Vec<f32>)> = map
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_run_writes_metrics_events_checkpoints_and_curves() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(small(dir.path())).unwrap();
    let summary = trainer.run().unwrap();
    assert_eq!(summary.iterations, 2);
    assert!(summary.plot_error.is_none(), "{:?}", summary.plot_error);
    let recs = read_jsonl(&dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(recs.len(), 3, "evaluation at 0, then iterations 1 and 2");
    assert!(
        recs[0].contains_key(names::EVAL_SUCCESS) && !recs[0].contains_key(names::TRAIN_SUCCESS)
    );
    for r in &recs[1..] {
        for k in [
            names::TRAIN_SUCCESS,
            names::ADV_STEP_GROUP_SHARE,
            names::ADV_DISTINCT_RETURN_SHARE,
            names::ADV_DISTINCT_ACTION_SHARE,
            names::ADV_MEAN_ABS_EPISODE,
            names::ADV_MEAN_ABS_STEP,
            "adv/step_group_size/1",
            "adv/step_group_size/9+",
            names::LOSS_PG,
            names::GRAD_NORM,
            names::EVAL_SUCCESS,
            names::TOKENS_PER_S,
        ] {
            assert!(r[k].is_finite(), "{k}");
        }
    }
    let histogram: f64 = ["1", "2", "3-4", "5-8", "9+"]
        .iter()
        .map(|bin| recs[2][&format!("{}{bin}", names::ADV_STEP_GROUP_SIZE)])
        .sum();
    assert!((histogram - 1.0).abs() < 1e-12, "{histogram}");
    assert_eq!(
        recs[2][names::ENV_STEPS],
        2.0 * 2.0 * 3.0 * 3.0,
        "6 episodes of 3 steps per iteration"
    );
    // TensorBoard events parse back with the same values.
    let tb = std::fs::read_dir(dir.path().join("tensorboard"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let events = read_events(&std::fs::read(tb).unwrap()).unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.step, 2);
    let v = last
        .scalars
        .iter()
        .find(|(k, _)| k == names::TRAIN_RETURN)
        .unwrap()
        .1;
    assert_eq!(v, recs[2][names::TRAIN_RETURN] as f32);
    // Two checkpoints kept, config saved, curves drawn.
    let cks = checkpoint::list(dir.path()).unwrap();
    assert_eq!(cks.iter().map(|c| c.0).collect::<Vec<_>>(), vec![1, 2]);
    assert!(cks[1].1.join("model/config.json").is_file());
    let saved = TrainConfig::from_file(&dir.path().join("config.toml")).unwrap();
    assert_eq!(&saved, trainer.config());
    assert!(dir.path().join("curves.png").is_file());
    // A second run may not start over the first one.
    let e = Trainer::new(small(dir.path())).err().unwrap().to_string();
    assert!(e.contains("--resume"), "{e}");
}

#[test]
fn resuming_equals_running_straight_through() {
    let straight = tempfile::tempdir().unwrap();
    let mut cfg = small(straight.path());
    cfg.iterations = 4;
    Trainer::new(cfg.clone()).unwrap().run().unwrap();

    let split = tempfile::tempdir().unwrap();
    let mut first = cfg.clone();
    first.run_dir = split.path().to_path_buf();
    first.iterations = 2;
    Trainer::new(first).unwrap().run().unwrap();
    let mut resumed = Trainer::resume(split.path(), Some(4)).unwrap();
    assert_eq!(resumed.iterations_done(), 2);
    resumed.run().unwrap();

    assert_eq!(weights(straight.path()), weights(split.path()));
    let a = read_jsonl(&straight.path().join("metrics.jsonl")).unwrap();
    let b = read_jsonl(&split.path().join("metrics.jsonl")).unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        for k in [
            names::ITERATION,
            names::TRAIN_RETURN,
            names::LOSS_PG,
            names::GRAD_NORM,
            names::EVAL_RETURN,
        ] {
            assert_eq!(x.get(k), y.get(k), "{k}");
        }
    }
}

#[test]
fn trajectory_layout_and_other_estimators_train() {
    for (layout, estimator, agg) in [
        (SampleLayout::Trajectory, "gigpo", "seq-mean-token-mean"),
        (SampleLayout::Step, "rloo", "seq-mean-token-sum"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = small(dir.path());
        cfg.sample_layout = layout;
        cfg.iterations = 1;
        cfg.set("algorithm.estimator", estimator).unwrap();
        cfg.set("loss.aggregation", agg).unwrap();
        cfg.set("model.lora.rank", "2").unwrap();
        let mut t = Trainer::new(cfg).unwrap();
        t.run().unwrap();
        let recs = read_jsonl(&dir.path().join("metrics.jsonl")).unwrap();
        assert!(recs[1][names::LOSS_TOTAL].is_finite());
        assert!(recs[1][names::GRAD_NORM] >= 0.0);
    }
}

#[test]
fn resume_without_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = Trainer::resume(dir.path(), None).err().unwrap().to_string();
    assert!(e.contains("no checkpoint"), "{e}");
}

#[test]
fn the_policy_trained_is_the_policy_that_sampled_in_both_layouts() {
    // Sampling at T = 0.7 with top-p 0.9: the behaviour log-probabilities recorded while
    // sampling equal those the update recomputes, token for token, in both layouts.
    for layout in [SampleLayout::Step, SampleLayout::Trajectory] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = small(dir.path());
        cfg.iterations = 1;
        cfg.sample_layout = layout;
        cfg.set("rollout.temperature", "0.7").unwrap();
        cfg.set("rollout.top_p", "0.9").unwrap();
        cfg.set("rollout.max_new_tokens", "3").unwrap();
        cfg.set("eval.every", "0").unwrap();
        let mut t = Trainer::new(cfg).unwrap();
        t.run().unwrap();
        let recs = read_jsonl(&dir.path().join("metrics.jsonl")).unwrap();
        let first = recs.iter().find(|r| r[names::ITERATION] == 1.0).unwrap();
        let m = first[names::LOGPROB_MISMATCH];
        assert!(m < 1e-3, "{layout:?}: mismatch {m}");
    }
}

#[test]
fn warm_start_trains_on_solver_moves_and_checkpoints_iteration_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small(dir.path());
    cfg.iterations = 1;
    cfg.set("sft.levels", "20").unwrap();
    cfg.set("sft.epochs", "3").unwrap();
    cfg.set("sft.batch_size", "16").unwrap();
    let mut t = Trainer::new(cfg).unwrap();
    t.run().unwrap();
    let recs = read_jsonl(&dir.path().join("metrics.jsonl")).unwrap();
    let first = &recs[0];
    assert_eq!(first[names::ITERATION], 0.0);
    assert!(first[names::SFT_DEMONSTRATIONS] >= 20.0);
    // Three epochs on the same demonstrations lower the loss.
    assert!(
        first[names::SFT_LAST_LOSS] < first[names::SFT_FIRST_LOSS],
        "{first:?}"
    );
    assert!(first.contains_key(names::EVAL_GREEDY_SUCCESS));
    let iters: Vec<usize> = checkpoint::list(dir.path())
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert!(iters.contains(&1), "{iters:?}");
}
