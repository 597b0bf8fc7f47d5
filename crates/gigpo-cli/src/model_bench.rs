//! `gigpo model parity` and `gigpo model bench`: check a device against the CPU, and time one
//! LoRA training iteration of a model shape on it (bench/gpu.sh runs both on a GPU).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use gigpo_model::{
    AdamW, AdamWConfig, Device, LogitProcessing, LoraConfig, ModelConfig, Policy, SamplingParams,
    ScoreMode, TrainMemory,
};

use crate::device_load::{load_on, open_device};

/// Prompts whose logits are compared.
const PARITY_PROMPTS: [&str; 3] = [
    "Push the box left.",
    "You are in a 6x6 room with walls, a box and a target. Which way do you move?",
    "up",
];

#[derive(Args)]
pub struct ParityArgs {
    /// A Hugging Face Qwen2/Llama directory, a Llama/Qwen2 GGUF file, or `tiny`.
    #[arg(long, default_value = "tiny")]
    model: String,
    /// The device compared with the CPU: `cuda`, `cuda:N`, `auto` or `cpu`.
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Largest allowed difference of a logit.
    #[arg(long, default_value_t = 1e-3)]
    tolerance: f32,
}

/// Loads the model on the CPU and on the device and compares the logits of every position of
/// a few prompts, with and without gradient tracking; fails above the tolerance.
pub fn parity(a: &ParityArgs) -> anyhow::Result<()> {
    if a.tolerance.is_nan() || a.tolerance < 0.0 {
        bail!("--tolerance must be a number ≥ 0");
    }
    let device = open_device(a.device.parse()?)?;
    let on_cpu = load_on(&a.model, 0, &Device::Cpu)?;
    let on_device = load_on(&a.model, 0, &device)?;
    let mut worst = 0f32;
    for text in PARITY_PROMPTS {
        let ids = on_cpu.tokenizer().encode(text)?;
        if ids.is_empty() {
            continue;
        }
        for (name, mode) in [("no grad", ScoreMode::OLD), ("grad", ScoreMode::TRAIN)] {
            let want = on_cpu.logits(&ids, mode)?.detach();
            let got = on_device
                .logits(&ids, mode)?
                .detach()
                .to_device(&Device::Cpu)?;
            let diff = (want - got)?.abs()?.max_all()?.to_scalar::<f32>()?;
            if !diff.is_finite() {
                bail!("{}: logits of {text:?} ({name}) are not finite", a.model);
            }
            println!(
                "{} {:>3} tokens {name:>7}: max |logit difference| {diff:.2e}",
                a.model,
                ids.len()
            );
            worst = worst.max(diff);
        }
    }
    if worst > a.tolerance {
        bail!(
            "{}: logits on {} differ from the CPU's by {worst:.2e} (> {:.0e})",
            a.model,
            a.device,
            a.tolerance
        );
    }
    println!(
        "{}: logits on {} within {worst:.2e} of the CPU (tolerance {:.0e})",
        a.model, a.device, a.tolerance
    );
    Ok(())
}

#[derive(Args)]
pub struct BenchArgs {
    /// A Hugging Face `config.json`: the shape of the model, whose weights are drawn at random
    /// (bench/gpu/ has Qwen2.5-0.5B's and 1.5B's).
    #[arg(long)]
    config: PathBuf,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Sequences sampled and trained on.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Prompt tokens of each sequence.
    #[arg(long, default_value_t = 256)]
    prompt_tokens: usize,
    /// Tokens sampled after each prompt.
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    /// Print one JSON object instead of lines of text.
    #[arg(long)]
    json: bool,
}

/// Figures of one training iteration.
#[derive(serde::Serialize)]
struct BenchFigures {
    trainable_parameters: usize,
    sequences: usize,
    sampled_tokens: usize,
    trained_tokens: usize,
    rollout_seconds: f64,
    update_seconds: f64,
    rollout_tokens_per_second: f64,
    trained_tokens_per_second: f64,
    seconds_per_iteration: f64,
}

/// One LoRA training iteration of a randomly initialised model: sample `batch` continuations
/// of `new_tokens` tokens (temperature 1), then one update on the whole sequences (forward,
/// backward with recomputed activations, AdamW on the adapter).
pub fn bench(a: &BenchArgs) -> anyhow::Result<()> {
    if a.batch == 0 || a.prompt_tokens == 0 || a.new_tokens == 0 {
        bail!("--batch, --prompt-tokens and --new-tokens must be at least 1");
    }
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let cfg = ModelConfig::from_hf_json(&text, &a.config)?;
    let device = open_device(a.device.parse()?)?;
    let mut policy = Policy::random(&cfg, 0.02, 0, &device)?;
    policy.add_lora(LoraConfig::default())?;
    let trainable_parameters = policy.num_trainable_parameters();

    let vocab = policy.tokenizer().vocab_size() as u64;
    let prompts: Vec<Vec<u32>> = (0..a.batch as u64)
        .map(|r| {
            (0..a.prompt_tokens as u64)
                .map(|i| ((r * 7919 + i * 104_729) % vocab) as u32)
                .collect()
        })
        .collect();
    let params = SamplingParams {
        temperature: 1.0,
        max_new_tokens: a.new_tokens,
        ..SamplingParams::default()
    };
    let t0 = Instant::now();
    let generations = policy.generate(&prompts, &params, 0)?;
    let rollout_seconds = t0.elapsed().as_secs_f64();

    let sequences: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&generations)
        .map(|(p, g)| [p.as_slice(), &g.tokens].concat())
        .collect();
    let starts: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let mut opt = AdamW::new(
        policy.named_trainable_vars().to_vec(),
        AdamWConfig::default(),
    )?;
    let t0 = Instant::now();
    let pass = policy.train_pass(
        &sequences,
        &starts,
        &LogitProcessing::RAW,
        TrainMemory { recompute: true },
    )?;
    let loss = (pass.scores().logprobs.sum_all()? * -1e-3)?;
    let grads = pass.backward(&loss)?;
    drop(loss);
    opt.step(&grads)?;
    device.synchronize()?;
    let update_seconds = t0.elapsed().as_secs_f64();

    let sampled_tokens: usize = generations.iter().map(|g| g.tokens.len()).sum();
    let trained_tokens: usize = sequences.iter().map(Vec::len).sum();
    let figures = BenchFigures {
        trainable_parameters,
        sequences: a.batch,
        sampled_tokens,
        trained_tokens,
        rollout_seconds,
        update_seconds,
        rollout_tokens_per_second: sampled_tokens as f64 / rollout_seconds,
        trained_tokens_per_second: trained_tokens as f64 / update_seconds,
        seconds_per_iteration: rollout_seconds + update_seconds,
    };
    if a.json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        println!(
            "{} trained parameters, {} sequences of {} + {} tokens",
            figures.trainable_parameters, a.batch, a.prompt_tokens, a.new_tokens
        );
        println!(
            "rollout {:.1} tokens/s, training {:.1} tokens/s, {:.2} s per iteration",
            figures.rollout_tokens_per_second,
            figures.trained_tokens_per_second,
            figures.seconds_per_iteration
        );
    }
    Ok(())
}
