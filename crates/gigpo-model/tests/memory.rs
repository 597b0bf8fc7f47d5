//! Memory bounds of training and of no-gradient passes, measured as the growth of this
//! process's peak RSS. A binary of its own with one test, so no other test shares the process.

use gigpo_model::*;

/// Peak RSS (VmHWM) in MiB, after resetting it to the current RSS when `reset`.
fn peak_mib(reset: bool) -> f64 {
    if reset {
        // "5" resets the peak to the current RSS (Linux ≥ 4.0); if refused the bound only
        // gets stricter.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb / 1024.0
}

fn current_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb / 1024.0
}

#[cfg(target_env = "gnu")]
extern "C" {
    fn malloc_trim(pad: usize) -> i32;
}

/// MiB the peak grows by while `f` runs (freed heap memory is returned to the system first).
fn growth<T>(f: impl FnOnce() -> T) -> (f64, T) {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        malloc_trim(0);
    }
    let base = current_mib();
    peak_mib(true);
    let out = f();
    (peak_mib(false) - base, out)
}

/// A mid-size random model: 6 layers of width 256, vocabulary 8192 (≈ 8M parameters).
fn mid_model() -> Policy {
    let cfg = TinyConfig {
        hidden_size: 256,
        num_layers: 6,
        num_heads: 4,
        num_kv_heads: 2,
        intermediate_size: 768,
        ..TinyConfig::default()
    };
    let mut mcfg = cfg.model_config(8192).unwrap();
    mcfg.tie_word_embeddings = true;
    let mut p = Policy::random(&mcfg, 0.02, 3, &Device::Cpu).unwrap();
    p.add_lora(LoraConfig::default()).unwrap();
    p
}

fn batch(b: usize, t: usize, vocab: u32) -> (Vec<Vec<u32>>, Vec<usize>) {
    let seqs = (0..b)
        .map(|r| {
            (0..t)
                .map(|i| ((r * 31 + i * 7919) as u32) % vocab)
                .collect()
        })
        .collect();
    (seqs, vec![t / 2; b])
}

fn train_step(
    p: &Policy,
    opt: &mut AdamW,
    seqs: &[Vec<u32>],
    starts: &[usize],
    memory: TrainMemory,
) {
    let pass = p
        .train_pass(seqs, starts, &LogitProcessing::RAW, memory)
        .unwrap();
    let s = pass.scores();
    let loss = (&s.logprobs + (&s.entropies * 0.1).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = pass.backward(&loss).unwrap();
    let n = grads.get_ids().count();
    assert_eq!(
        n,
        p.trainable_vars().len(),
        "gradients of trainable variables only"
    );
    opt.step(&grads).unwrap();
}

#[test]
fn memory_stays_bounded() {
    let p = mid_model();
    let (seqs, starts) = batch(4, 256, 8192);

    // Decoding 32 or 256 tokens: the KV cache (≈ 1.5 MiB at 256 tokens) and per-step
    // temporaries, nothing that grows with the number of steps squared.
    let prompts = vec![seqs[0][..64].to_vec(), seqs[1][..40].to_vec()];
    let params = |n| SamplingParams {
        max_new_tokens: n,
        ..SamplingParams::default()
    };
    p.generate(&prompts, &params(8), 1).unwrap();
    let (short, _) = growth(|| p.generate(&prompts, &params(32), 1).unwrap());
    let (long, g) = growth(|| p.generate(&prompts, &params(256), 1).unwrap());
    assert!(g
        .iter()
        .all(|g| g.tokens.len() == 256 || g.finish_reason != FinishReason::Length));
    eprintln!("decode: 32 steps {short:.0} MiB, 256 steps {long:.0} MiB");
    assert!(
        long < short + 40.0,
        "256 decode steps grew the peak RSS by {long:.0} MiB, 32 steps by {short:.0} MiB"
    );

    // No-gradient scoring records nothing.
    let s = p.score(&seqs, &starts, ScoreMode::OLD).unwrap();
    assert!(!s.logprobs.track_op() && !s.entropies.track_op());

    let mut opt = AdamW::new(p.named_trainable_vars().to_vec(), AdamWConfig::default()).unwrap();
    // Warm-up: thread pools and the optimizer's moments.
    train_step(
        &p,
        &mut opt,
        &seqs,
        &starts,
        TrainMemory { recompute: true },
    );
    // One LoRA step on 4 × 256 tokens with recomputation, then keeping every activation
    // (measured: about 100 and 290 MiB).
    let recompute = TrainMemory { recompute: true };
    let (mib, ()) = growth(|| train_step(&p, &mut opt, &seqs, &starts, recompute));
    let (kept, ()) = growth(|| train_step(&p, &mut opt, &seqs, &starts, TrainMemory::default()));
    eprintln!("peak growth of one step: recompute {mib:.0} MiB, kept {kept:.0} MiB");
    assert!(
        mib < 160.0,
        "a recomputed LoRA step grew the peak RSS by {mib:.0} MiB"
    );
    assert!(
        kept < 500.0,
        "a LoRA step grew the peak RSS by {kept:.0} MiB"
    );
}
