//! Rollout throughput of a sampler: collects Sokoban episodes with the policy in this process
//! (`--backend candle`) or on a vLLM server (`--backend vllm --endpoint URL`), both with a
//! fresh LoRA adapter (rank 8, as training uses), and prints one JSON line with the generated
//! tokens per second. `bench/vllm-throughput.sh` runs it for the table in the README.
//!
//! ```sh
//! cargo run --release -p gigpo-train --example rollout_throughput -- --write-tiny DIR
//! cargo run --release -p gigpo-train --example rollout_throughput -- --model DIR --backend candle
//! cargo run --release -p gigpo-train --example rollout_throughput -- --model DIR --backend vllm --endpoint http://127.0.0.1:8000
//! ```

use std::path::PathBuf;
use std::time::Instant;

use gigpo_env::action::ActionFormat;
use gigpo_env::sokoban::SokobanConfig;
use gigpo_env::spec::EnvSpec;
use gigpo_model::{Device, LoraConfig, Policy, SamplingParams, SaveMode, TinyConfig};
use gigpo_train::prompt::{HistoryAction, PromptStyle};
use gigpo_train::rollout::{collect, RolloutPlan};
use gigpo_train::sampler::Sampler;
use gigpo_train::vllm::{VllmConfig, VllmSampler};

struct Args {
    model: Option<PathBuf>,
    write_tiny: Option<PathBuf>,
    backend: String,
    endpoint: String,
    groups: usize,
    group_size: usize,
    steps: usize,
    max_new_tokens: usize,
    rounds: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        model: None,
        write_tiny: None,
        backend: "candle".into(),
        endpoint: "http://127.0.0.1:8000".into(),
        groups: 4,
        group_size: 8,
        steps: 3,
        max_new_tokens: 32,
        rounds: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--model" => a.model = Some(value()?.into()),
            "--write-tiny" => a.write_tiny = Some(value()?.into()),
            "--backend" => a.backend = value()?,
            "--endpoint" => a.endpoint = value()?,
            "--groups" => a.groups = number(value()?)?,
            "--group-size" => a.group_size = number(value()?)?,
            "--steps" => a.steps = number(value()?)?,
            "--max-new-tokens" => a.max_new_tokens = number(value()?)?,
            "--rounds" => a.rounds = number(value()?)?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

/// The tiny model of the vLLM test (head size 32), written as a Hugging Face directory.
fn write_tiny(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = TinyConfig {
        hidden_size: 64,
        num_layers: 2,
        num_heads: 2,
        num_kv_heads: 2,
        intermediate_size: 256,
        max_position_embeddings: 1024,
        ..TinyConfig::default()
    };
    Policy::tiny(&cfg, 0, &Device::Cpu)?.save(dir, SaveMode::Full)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    if let Some(dir) = &args.write_tiny {
        return write_tiny(dir);
    }
    let model = args.model.clone().ok_or("--model DIR is needed")?;
    let mut policy = Policy::load(&model, &Device::Cpu, None)?;
    policy.add_lora(LoraConfig::default())?;
    let adapters = tempfile::tempdir()?;
    let server = match args.backend.as_str() {
        "candle" => None,
        "vllm" => {
            let mut s = VllmSampler::connect(
                std::slice::from_ref(&args.endpoint),
                &VllmConfig::default(),
                adapters.path(),
                policy.tokenizer().clone(),
            )?;
            s.serve(&policy, 0)?;
            Some(s)
        }
        other => return Err(format!("--backend {other}: candle or vllm").into()),
    };
    let sampler: &dyn Sampler = match &server {
        Some(s) => s,
        None => &policy,
    };
    let env = EnvSpec::Sokoban(SokobanConfig {
        action_format: ActionFormat::TaggedOrBare,
        ..SokobanConfig::default()
    });
    let sampling = SamplingParams {
        max_new_tokens: args.max_new_tokens,
        ..SamplingParams::default()
    };
    let prompt = PromptStyle {
        chat: false,
        history_length: 2,
        history_action: HistoryAction::Parsed,
        instructions: true,
        system_prompt: None,
        response_prefix: String::new(),
    };
    // Round 0 warms up (the server's first batches, the allocator); the rest are measured.
    let (mut tokens, mut prompt_tokens, mut seconds, mut episodes) = (0, 0, 0.0, 0);
    for round in 0..=args.rounds {
        let seeds: Vec<u64> = (0..args.groups as u64)
            .map(|g| 1000 * round as u64 + g)
            .collect();
        let plan = RolloutPlan {
            env: &env,
            seeds: &seeds,
            group_size: args.group_size,
            max_steps: args.steps,
            prompt: prompt.clone(),
            sampling: &sampling,
            sample_seed: round as u64,
        };
        let start = Instant::now();
        let r = collect(sampler, &plan)?;
        let s = start.elapsed().as_secs_f64();
        if r.sampler_faults > 0 {
            return Err(format!("{} sampler faults", r.sampler_faults).into());
        }
        if round > 0 {
            tokens += r.generated_tokens;
            prompt_tokens += r.prompt_tokens;
            seconds += s;
            episodes += r.trajectories.len();
        }
    }
    let line = serde_json::json!({
        "backend": args.backend,
        "model": model.display().to_string(),
        "episodes": episodes,
        "generated_tokens": tokens,
        "prompt_tokens": prompt_tokens,
        "seconds": seconds,
        "tokens_per_s": tokens as f64 / seconds.max(1e-9),
    });
    println!("{line}");
    Ok(())
}
