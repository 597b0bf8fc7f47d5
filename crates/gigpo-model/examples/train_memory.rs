//! Peak memory and time of one LoRA training update on a randomly initialised model of a real
//! shape. One configuration per process, so the peak RSS (VmHWM) belongs to it alone.
//!
//! `cargo run --release -p gigpo-model --example train_memory -- SHAPE BATCH SEQ [MODE]`
//! with SHAPE `smollm2-135m` or `qwen2.5-0.5b` and MODE `recompute` (default: layer
//! activations recomputed in the backward step) or `keep` (all activations kept). The second
//! half of each sequence is scored. Prints one line:
//! `shape batch seq mode build_peak_mib update_peak_mib seconds_per_update`: the peak RSS while
//! building the random model, the peak RSS from then on (weights, optimizer, updates), and the
//! time of the last of `STEPS` updates (default 2).

use std::time::Instant;

use gigpo_model::{
    AdamW, AdamWConfig, Architecture, Device, LogitProcessing, LoraConfig, ModelConfig, Policy,
    TrainMemory,
};

fn shape(name: &str) -> Option<ModelConfig> {
    let base = ModelConfig {
        architecture: Architecture::Llama,
        vocab_size: 49152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_layers: 30,
        num_heads: 9,
        num_kv_heads: 3,
        head_dim: 64,
        rope_theta: 100_000.0,
        rope_scaling: None,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 8192,
        tie_word_embeddings: true,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
    };
    match name {
        "smollm2-135m" => Some(base),
        "qwen2.5-0.5b" => Some(ModelConfig {
            architecture: Architecture::Qwen2,
            vocab_size: 151936,
            hidden_size: 896,
            intermediate_size: 4864,
            num_layers: 24,
            num_heads: 14,
            num_kv_heads: 2,
            head_dim: 64,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 32768,
            qkv_bias: true,
            ..base
        }),
        _ => None,
    }
}

#[cfg(target_env = "gnu")]
extern "C" {
    fn malloc_trim(pad: usize) -> i32;
}

/// Returns freed memory to the system and resets the peak RSS to the current RSS (Linux).
fn reset_peak() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> gigpo_model::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: train_memory SHAPE BATCH SEQ [recompute|keep]";
    let (Some(cfg), Some(b), Some(t)) = (
        args.first().and_then(|s| shape(s)),
        args.get(1).and_then(|s| s.parse::<usize>().ok()),
        args.get(2).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let mode = args.get(3).map_or("recompute", String::as_str);
    let memory = TrainMemory {
        recompute: mode != "keep",
    };
    let mut policy = Policy::random(&cfg, 0.02, 0, &Device::Cpu)?;
    policy.add_lora(LoraConfig::default())?;
    let build_peak = peak_rss_mib();
    reset_peak();
    let mut opt = AdamW::new(
        policy.named_trainable_vars().to_vec(),
        AdamWConfig::default(),
    )?;
    let vocab = cfg.vocab_size as u32;
    // Prompt = first half, response (scored) = second half of each sequence.
    let seqs: Vec<Vec<u32>> = (0..b)
        .map(|r| {
            (0..t)
                .map(|i| ((r * 7919 + i * 104_729) as u32) % vocab)
                .collect()
        })
        .collect();
    let starts = vec![t / 2; b];
    let mut seconds = 0.0;
    let steps: usize = std::env::var("STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    for _ in 0..steps.max(1) {
        let t0 = Instant::now();
        let pass = policy.train_pass(&seqs, &starts, &LogitProcessing::RAW, memory)?;
        let s = pass.scores();
        let loss = ((&s.logprobs + (&s.entropies * 0.01)?)?.sum_all()? * -1e-3)?;
        let grads = pass.backward(&loss)?;
        drop(loss);
        opt.step(&grads)?;
        seconds = t0.elapsed().as_secs_f64();
    }
    println!(
        "{} {b} {t} {mode} {build_peak:.0} {:.0} {seconds:.2}",
        args[0],
        peak_rss_mib()
    );
    Ok(())
}
