//! Scoring and training: gradients, LoRA, optimizer, saving and loading.

mod common;

use common::*;
use gigpo_model::*;

fn batch(p: &Policy) -> (Vec<Vec<u32>>, Vec<usize>) {
    let pr = prompts(p);
    let tok = p.tokenizer();
    let responses = [
        "<think>go</think><action>up</action>",
        "<action>left</action>",
        "hmm <action>push</action>",
    ];
    let seqs = pr
        .iter()
        .zip(responses)
        .map(|(a, r)| [a.clone(), tok.encode(r).unwrap()].concat())
        .collect();
    (seqs, pr.iter().map(Vec::len).collect())
}

/// A PPO-like loss: advantage-weighted log-probabilities plus an entropy term.
fn loss(p: &Policy, seqs: &[Vec<u32>], starts: &[usize], mode: ScoreMode) -> Tensor {
    let s = p.score(seqs, starts, mode).unwrap();
    let (b, n) = s.logprobs.dims2().unwrap();
    let adv: Vec<f32> = (0..b * n)
        .map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.5)
        .collect();
    let adv = Tensor::from_vec(adv, (b, n), &Device::Cpu).unwrap();
    let pg = (s.logprobs * adv).unwrap().sum_all().unwrap();
    let ent = (s.entropies * 0.1).unwrap().sum_all().unwrap();
    (pg + ent).unwrap()
}

#[test]
fn backprop_matches_finite_differences() {
    let p = policy(10);
    let (seqs, starts) = batch(&p);
    let grads = loss(&p, &seqs, &starts, ScoreMode::TRAIN)
        .backward()
        .unwrap();
    let eps = 1e-2f32;
    let mut checked = 0;
    for (name, var) in p.named_trainable_vars() {
        let g = to_vec(grads.get(var.as_tensor()).unwrap());
        let w0 = to_vec(var.as_tensor());
        // The entry with the largest gradient and one in the middle.
        let imax = (0..g.len())
            .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .unwrap();
        for i in [imax, g.len() / 2] {
            let eval = |delta: f32| {
                let mut w = w0.clone();
                w[i] += delta;
                var.set(&Tensor::from_vec(w, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let l = loss(&p, &seqs, &starts, ScoreMode::OLD)
                    .to_scalar::<f32>()
                    .unwrap();
                l as f64
            };
            let fd = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
            var.set(&Tensor::from_vec(w0.clone(), var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let bp = g[i] as f64;
            let tol = 2e-3 + 2e-2 * bp.abs().max(fd.abs());
            assert!(
                (fd - bp).abs() < tol,
                "{name}[{i}]: finite difference {fd}, backprop {bp}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "checked {checked} entries");
}

#[test]
fn every_trainable_variable_gets_a_gradient() {
    let p = policy(11);
    let (seqs, starts) = batch(&p);
    let grads = loss(&p, &seqs, &starts, ScoreMode::TRAIN)
        .backward()
        .unwrap();
    assert_eq!(p.named_trainable_vars().len(), 1 + 2 * (2 + 7 + 3) + 1 + 1);
    for (name, var) in p.named_trainable_vars() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let norm: f32 = to_vec(g).iter().map(|x| x * x).sum();
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{name}: gradient norm {norm}"
        );
    }
}

#[test]
fn no_grad_scoring_records_nothing() {
    let p = policy(11);
    let (seqs, starts) = batch(&p);
    let grads = loss(&p, &seqs, &starts, ScoreMode::OLD).backward().unwrap();
    for (name, var) in p.named_trainable_vars() {
        assert!(
            grads.get(var.as_tensor()).is_none(),
            "{name} got a gradient without grad mode"
        );
    }
}

#[test]
fn batched_scoring_equals_one_at_a_time_and_pads_with_zero() {
    let p = policy(12);
    let (seqs, starts) = batch(&p);
    let s = p.score(&seqs, &starts, ScoreMode::OLD).unwrap();
    let n = s.lengths.iter().copied().max().unwrap();
    assert_eq!(s.logprobs.dims(), &[3, n]);
    let mask = s.mask.to_vec2::<f32>().unwrap();
    let lp = s.logprobs.to_vec2::<f32>().unwrap();
    for i in 0..3 {
        let alone = p
            .score(&seqs[i..=i], &starts[i..=i], ScoreMode::OLD)
            .unwrap();
        let d = max_abs_diff(
            &alone.logprob_rows().unwrap(),
            &s.logprob_rows().unwrap()[i..=i],
        );
        assert!(d < 1e-5, "row {i}: {d}");
        let de = max_abs_diff(
            &alone.entropy_rows().unwrap(),
            &s.entropy_rows().unwrap()[i..=i],
        );
        assert!(de < 1e-5, "row {i} entropies: {de}");
        for j in 0..n {
            assert_eq!(mask[i][j], if j < s.lengths[i] { 1.0 } else { 0.0 });
            if j >= s.lengths[i] {
                assert_eq!(lp[i][j], 0.0);
            } else {
                assert!(lp[i][j] < 0.0);
            }
        }
    }
    // Entropies are within [0, ln V].
    let vmax = (p.config().vocab_size as f32).ln();
    for row in s.entropy_rows().unwrap() {
        assert!(row.iter().all(|&h| (0.0..=vmax + 1e-4).contains(&h)));
    }
    // Training mode (composed ops) computes the same values.
    let t = p.score(&seqs, &starts, ScoreMode::TRAIN).unwrap();
    assert!(max_abs_diff(&t.logprob_rows().unwrap(), &s.logprob_rows().unwrap()) < 1e-4);
}

#[test]
fn scoring_arguments_are_checked() {
    let p = policy(13);
    let e = p
        .score(&[vec![1, 2, 3]], &[0], ScoreMode::OLD)
        .unwrap_err()
        .to_string();
    assert!(e.contains("start"), "{e}");
    let e = p
        .score(&[vec![1, 2, 3]], &[4], ScoreMode::OLD)
        .unwrap_err()
        .to_string();
    assert!(e.contains("start"), "{e}");
    let e = p
        .score(&[vec![1, 2, 3]], &[1, 1], ScoreMode::OLD)
        .unwrap_err()
        .to_string();
    assert!(e.contains("start"), "{e}");
    let e = p
        .score(&[vec![1, 99_999]], &[1], ScoreMode::OLD)
        .unwrap_err()
        .to_string();
    assert!(e.contains("vocabulary"), "{e}");
    let s = p.score(&[vec![1, 2, 3]], &[3], ScoreMode::OLD).unwrap();
    assert_eq!(s.logprobs.dims(), &[1, 0]);
}

fn lora_cfg() -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        target_modules: TargetModule::ALL.to_vec(),
        seed: 3,
    }
}

fn train_steps(p: &Policy, n: usize) -> AdamW {
    let (seqs, starts) = batch(p);
    let cfg = AdamWConfig {
        lr: 1e-2,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(p.named_trainable_vars().to_vec(), cfg).unwrap();
    for _ in 0..n {
        let g = loss(p, &seqs, &starts, ScoreMode::TRAIN)
            .backward()
            .unwrap();
        opt.step(&g).unwrap();
    }
    opt
}

#[test]
fn lora_zero_adapter_equals_base_and_only_adapter_changes() {
    let base = policy(20);
    let (seqs, starts) = batch(&base);
    let before = base
        .score(&seqs, &starts, ScoreMode::OLD)
        .unwrap()
        .logprob_rows()
        .unwrap();
    let mut p = policy(20);
    p.add_lora(lora_cfg()).unwrap();
    assert_eq!(p.named_trainable_vars().len(), 2 * 7 * 2);
    let on = p
        .score(&seqs, &starts, ScoreMode::OLD)
        .unwrap()
        .logprob_rows()
        .unwrap();
    assert!(max_abs_diff(&before, &on) < 1e-6);
    let frozen: Vec<Vec<f32>> = base
        .named_trainable_vars()
        .iter()
        .map(|(_, v)| to_vec(v.as_tensor()))
        .collect();
    let adapters0: Vec<Vec<f32>> = p
        .named_trainable_vars()
        .iter()
        .map(|(_, v)| to_vec(v.as_tensor()))
        .collect();
    train_steps(&p, 2);
    // Base weights unchanged: the reference (adapter off) still scores like the base model.
    let reference = p
        .score(&seqs, &starts, ScoreMode::REFERENCE)
        .unwrap()
        .logprob_rows()
        .unwrap();
    assert_eq!(reference, before);
    let copy = p.frozen_copy().unwrap();
    let _ = frozen;
    // Every adapter tensor moved.
    for ((name, v), a0) in p.named_trainable_vars().iter().zip(&adapters0) {
        assert_ne!(&to_vec(v.as_tensor()), a0, "{name} did not change");
    }
    let on = p
        .score(&seqs, &starts, ScoreMode::OLD)
        .unwrap()
        .logprob_rows()
        .unwrap();
    assert!(
        max_abs_diff(&before, &on) > 1e-3,
        "training did not change the policy"
    );
    // The frozen copy equals the current policy.
    let c = copy
        .score(&seqs, &starts, ScoreMode::OLD)
        .unwrap()
        .logprob_rows()
        .unwrap();
    assert_eq!(c, on);
}

#[test]
fn lora_every_adapter_gets_a_gradient_after_a_step() {
    let mut p = policy(21);
    p.add_lora(lora_cfg()).unwrap();
    let (seqs, starts) = batch(&p);
    let g = loss(&p, &seqs, &starts, ScoreMode::TRAIN)
        .backward()
        .unwrap();
    // With B = 0 only the B matrices have a gradient at first.
    for (name, v) in p.named_trainable_vars() {
        let n: f32 = g
            .get(v.as_tensor())
            .map(|t| to_vec(t).iter().map(|x| x * x).sum())
            .unwrap_or(0.0);
        assert_eq!(n > 0.0, name.contains("lora_B"), "{name}: {n}");
    }
    train_steps(&p, 1);
    let g = loss(&p, &seqs, &starts, ScoreMode::TRAIN)
        .backward()
        .unwrap();
    for (name, v) in p.named_trainable_vars() {
        let n: f32 = to_vec(g.get(v.as_tensor()).unwrap())
            .iter()
            .map(|x| x * x)
            .sum();
        assert!(n > 0.0, "{name}");
    }
}

#[test]
fn merged_and_adapter_saves_reload_to_the_same_scores() {
    let mut p = policy(22);
    p.add_lora(lora_cfg()).unwrap();
    train_steps(&p, 2);
    let (seqs, starts) = batch(&p);
    let on = p
        .score(&seqs, &starts, ScoreMode::OLD)
        .unwrap()
        .logprob_rows()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let merged = dir.path().join("merged");
    p.save(&merged, SaveMode::Merged).unwrap();
    let m = Policy::load(&merged, &Device::Cpu, None).unwrap();
    let ms = m
        .score(&seqs, &starts, ScoreMode::OLD)
        .unwrap()
        .logprob_rows()
        .unwrap();
    assert!(
        max_abs_diff(&on, &ms) < 1e-4,
        "merged differs by {}",
        max_abs_diff(&on, &ms)
    );
    let base = dir.path().join("base");
    p.save(&base, SaveMode::Full).unwrap();
    let adapter = dir.path().join("adapter");
    p.save(&adapter, SaveMode::AdapterOnly).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        assert!(adapter.join(f).is_file(), "{f}");
    }
    let a = Policy::load_with_adapter(&base, &adapter, &Device::Cpu).unwrap();
    let as_ = a
        .score(&seqs, &starts, ScoreMode::OLD)
        .unwrap()
        .logprob_rows()
        .unwrap();
    assert!(max_abs_diff(&on, &as_) < 1e-6);
    let r = a
        .score(&seqs, &starts, ScoreMode::REFERENCE)
        .unwrap()
        .logprob_rows()
        .unwrap();
    let pr = p
        .score(&seqs, &starts, ScoreMode::REFERENCE)
        .unwrap()
        .logprob_rows()
        .unwrap();
    assert!(max_abs_diff(&r, &pr) < 1e-6);
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 4);
    let e = policy(1)
        .save(&dir.path().join("x"), SaveMode::AdapterOnly)
        .unwrap_err()
        .to_string();
    assert!(e.contains("adapter"), "{e}");
}

#[test]
fn lora_dropout_is_seeded() {
    let mk = || {
        let mut p = policy(23);
        p.add_lora(LoraConfig {
            dropout: 0.3,
            ..lora_cfg()
        })
        .unwrap();
        train_steps(&p, 1);
        p
    };
    let (a, b) = (mk(), mk());
    let (seqs, starts) = batch(&a);
    let sa = a
        .score(&seqs, &starts, ScoreMode::TRAIN)
        .unwrap()
        .logprob_rows()
        .unwrap();
    let sb = b
        .score(&seqs, &starts, ScoreMode::TRAIN)
        .unwrap()
        .logprob_rows()
        .unwrap();
    assert_eq!(sa, sb);
    let no_drop = a
        .score(&seqs, &starts, ScoreMode::OLD)
        .unwrap()
        .logprob_rows()
        .unwrap();
    assert_ne!(sa, no_drop, "dropout had no effect in training mode");
}

#[test]
fn full_save_roundtrip_and_frozen_copy_is_independent() {
    let p = policy(24);
    let frozen = p.frozen_copy().unwrap();
    assert!(frozen.trainable_vars().is_empty());
    let (seqs, starts) = batch(&p);
    let s0 = p
        .score(&seqs, &starts, ScoreMode::OLD)
        .unwrap()
        .logprob_rows()
        .unwrap();
    train_steps(&p, 1);
    let s1 = p
        .score(&seqs, &starts, ScoreMode::OLD)
        .unwrap()
        .logprob_rows()
        .unwrap();
    assert_ne!(s0, s1);
    assert_eq!(
        frozen
            .score(&seqs, &starts, ScoreMode::OLD)
            .unwrap()
            .logprob_rows()
            .unwrap(),
        s0
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    p.save(&out, SaveMode::Full).unwrap();
    // Saving again replaces the directory.
    p.save(&out, SaveMode::Full).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    let q = Policy::load(&out, &Device::Cpu, None).unwrap();
    assert_eq!(q.config(), p.config());
    let s2 = q
        .score(&seqs, &starts, ScoreMode::OLD)
        .unwrap()
        .logprob_rows()
        .unwrap();
    assert!(max_abs_diff(&s1, &s2) < 1e-6);
    assert_eq!(
        q.tokenizer().encode("<action>up</action>").unwrap(),
        p.tokenizer().encode("<action>up</action>").unwrap()
    );
    assert_eq!(q.tokenizer().eos_ids(), p.tokenizer().eos_ids());
}

#[test]
fn optimizer_state_resumes_exactly() {
    let run = |split: Option<&std::path::Path>| {
        let p = policy(25);
        let (seqs, starts) = batch(&p);
        let cfg = AdamWConfig {
            lr: 1e-2,
            max_grad_norm: Some(0.5),
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(p.named_trainable_vars().to_vec(), cfg.clone()).unwrap();
        for step in 0..4 {
            if step == 2 {
                if let Some(path) = split {
                    opt.save_state(path).unwrap();
                    opt = AdamW::new(p.named_trainable_vars().to_vec(), cfg.clone()).unwrap();
                    opt.load_state(path).unwrap();
                    assert_eq!(opt.steps(), 2);
                }
            }
            let g = loss(&p, &seqs, &starts, ScoreMode::TRAIN)
                .backward()
                .unwrap();
            let stats = opt.step(&g).unwrap();
            assert!(stats.grad_norm > 0.5 && stats.clip_scale < 1.0);
        }
        p.named_trainable_vars()
            .iter()
            .map(|(_, v)| to_vec(v.as_tensor()))
            .collect::<Vec<_>>()
    };
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run(None), run(Some(&dir.path().join("opt.safetensors"))));
}

#[test]
fn adamw_matches_the_reference_formula() {
    let w0 = [0.5f32, -1.0, 2.0];
    let var = Var::from_slice(&w0, 3, &Device::Cpu).unwrap();
    let cfg = AdamWConfig {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.1,
        max_grad_norm: Some(1.0),
    };
    let mut opt = AdamW::new(vec![("w".into(), var.clone())], cfg.clone()).unwrap();
    let (mut w, mut m, mut v) = (w0.map(f64::from), [0f64; 3], [0f64; 3]);
    for t in 1..=3 {
        // loss = Σ c_i w_i² → g = 2 c w
        let c = Tensor::new(&[3f32, 1.0, 0.5], &Device::Cpu).unwrap();
        let loss = (var.as_tensor().sqr().unwrap() * &c)
            .unwrap()
            .sum_all()
            .unwrap();
        let stats = opt.step(&loss.backward().unwrap()).unwrap();
        let g: Vec<f64> = [3.0, 1.0, 0.5]
            .iter()
            .zip(&w)
            .map(|(c, w)| 2.0 * c * w)
            .collect();
        let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((stats.grad_norm - norm).abs() < 1e-4 * norm);
        let scale = if norm > 1.0 { 1.0 / (norm + 1e-6) } else { 1.0 };
        for i in 0..3 {
            let gi = g[i] * scale;
            w[i] *= 1.0 - cfg.lr * cfg.weight_decay;
            m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * gi;
            v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * gi * gi;
            let mh = m[i] / (1.0 - cfg.beta1.powi(t));
            let vh = v[i] / (1.0 - cfg.beta2.powi(t));
            w[i] -= cfg.lr * mh / (vh.sqrt() + cfg.eps);
        }
        let got = to_vec(var.as_tensor());
        for i in 0..3 {
            assert!(
                (got[i] as f64 - w[i]).abs() < 1e-5,
                "step {t}: {got:?} vs {w:?}"
            );
        }
    }
}

/// Gradients of the PPO-like loss through a training pass.
fn pass_grads(p: &Policy, processing: &LogitProcessing, memory: TrainMemory) -> Vec<Vec<f32>> {
    let (seqs, starts) = batch(p);
    let pass = p.train_pass(&seqs, &starts, processing, memory).unwrap();
    let s = pass.scores();
    let (b, n) = s.logprobs.dims2().unwrap();
    let adv: Vec<f32> = (0..b * n)
        .map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.5)
        .collect();
    let adv = Tensor::from_vec(adv, (b, n), &Device::Cpu).unwrap();
    let loss = ((&s.logprobs * adv).unwrap().sum_all().unwrap()
        + (&s.entropies * 0.1).unwrap().sum_all().unwrap())
    .unwrap();
    let g = pass.backward(&loss).unwrap();
    p.trainable_vars()
        .iter()
        .map(|v| to_vec(g.get(v.as_tensor()).expect("a gradient for every variable")))
        .collect()
}

#[test]
fn recomputed_gradients_equal_kept_ones() {
    let processed = LogitProcessing {
        temperature: 0.7,
        top_k: 0,
        top_p: 0.9,
    };
    for lora in [false, true] {
        let mut p = policy(12);
        if lora {
            p.add_lora(lora_cfg()).unwrap();
            train_steps(&p, 2);
        }
        for proc_ in [LogitProcessing::RAW, processed] {
            let kept = pass_grads(&p, &proc_, TrainMemory::default());
            let rec = pass_grads(&p, &proc_, TrainMemory { recompute: true });
            for (a, b) in kept.iter().zip(&rec) {
                let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
                let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    d <= 1e-4 * scale,
                    "lora {lora}: gradients differ by {d} (scale {scale})"
                );
            }
        }
    }
}

#[test]
fn train_pass_gradients_equal_plain_backward() {
    let p = policy(13);
    let (seqs, starts) = batch(&p);
    let plain = loss(&p, &seqs, &starts, ScoreMode::TRAIN)
        .backward()
        .unwrap();
    let pass = pass_grads(&p, &LogitProcessing::RAW, TrainMemory { recompute: true });
    for (v, b) in p.trainable_vars().iter().zip(&pass) {
        let a = to_vec(plain.get(v.as_tensor()).unwrap());
        let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(d < 1e-4, "gradients differ by {d}");
    }
}

#[test]
fn processed_scores_match_finite_differences() {
    let p = policy(14);
    let (seqs, starts) = batch(&p);
    // The kept set changes with the weights (a choice without gradient), so the test uses
    // top-k with a few tokens, whose set a small step does not change, and a temperature.
    for processing in [
        LogitProcessing {
            temperature: 0.7,
            top_k: 0,
            top_p: 1.0,
        },
        LogitProcessing {
            temperature: 0.7,
            top_k: 5,
            top_p: 1.0,
        },
    ] {
        fd_check(&p, &seqs, &starts, &processing);
    }
}

fn fd_check(p: &Policy, seqs: &[Vec<u32>], starts: &[usize], processing: &LogitProcessing) {
    let value = |mode: ScoreMode| {
        let s = p.score_with(seqs, starts, mode, processing).unwrap();
        // Tokens outside the kept set are constants; leave them out of the sum.
        let kept = s
            .logprobs
            .ge(-1e3)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap();
        ((&s.logprobs * &kept).unwrap().sum_all().unwrap()
            + (&s.entropies * 0.1).unwrap().sum_all().unwrap())
        .unwrap()
    };
    let grads = value(ScoreMode::TRAIN).backward().unwrap();
    let (name, var) = &p.named_trainable_vars()[3];
    let g = to_vec(grads.get(var.as_tensor()).unwrap());
    let w0 = to_vec(var.as_tensor());
    let i = (0..g.len())
        .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
        .unwrap();
    let eps = 1e-3f32;
    let eval = |delta: f32| {
        let mut w = w0.clone();
        w[i] += delta;
        var.set(&Tensor::from_vec(w, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
        value(ScoreMode::OLD).to_scalar::<f32>().unwrap() as f64
    };
    let fd = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
    var.set(&Tensor::from_vec(w0, var.shape(), &Device::Cpu).unwrap())
        .unwrap();
    let bp = g[i] as f64;
    assert!(
        (fd - bp).abs() < 2e-3 + 2e-2 * bp.abs().max(fd.abs()),
        "{name}[{i}]: finite difference {fd}, backprop {bp}"
    );
}
