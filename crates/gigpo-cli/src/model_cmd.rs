//! `gigpo model`: try a policy model by hand — score a response or generate one — and convert
//! GGUF files into Hugging Face directories.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use gigpo_model::{convert_gguf, ChatMessage, FinishReason, Policy, SamplingParams, ScoreMode};

use crate::device_load::{load_on, open_device};
use crate::model_bench::{bench, parity, BenchArgs, ParityArgs};

/// `gigpo model …`
#[derive(Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Print the per-token log-probabilities of a response after a prompt.
    Score(ScoreArgs),
    /// Sample a continuation of a prompt.
    Generate(GenerateArgs),
    /// Convert a Llama/Qwen2 GGUF file into a Hugging Face directory (f32 weights).
    Convert(ConvertArgs),
    /// Compare a model's logits on a device (a GPU) with the CPU's.
    Parity(ParityArgs),
    /// Time one LoRA training iteration (sampling, then one update) of a randomly initialised
    /// model of a given shape.
    Bench(BenchArgs),
}

#[derive(Args)]
struct ConvertArgs {
    /// The GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// The directory to write (replaced atomically if it exists).
    #[arg(long)]
    out: PathBuf,
}

/// Which model to load.
#[derive(Args)]
struct ModelSource {
    /// A Hugging Face Qwen2/Llama directory, a Llama/Qwen2 GGUF file, or `tiny` for the
    /// built-in tiny model.
    #[arg(long, default_value = "tiny")]
    model: String,
    /// A PEFT LoRA adapter directory (`adapter_config.json`, `adapter_model.safetensors`)
    /// to apply on top of the model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Seed of the tiny model's initialisation.
    #[arg(long, default_value_t = 0)]
    tiny_seed: u64,
    /// `cpu`, `cuda`, `cuda:N` (CUDA needs a build with the `cuda` feature), or `auto`: CUDA
    /// device 0 when there is one, else the CPU.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Wrap the prompt as a user turn with the model's chat template (with the assistant header).
    #[arg(long)]
    chat: bool,
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    source: ModelSource,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// The response text whose tokens are scored.
    #[arg(long)]
    response: String,
    /// Print `{"tokens": [ids], "logprobs": [...]}`.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    source: ModelSource,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Stop once the text contains this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `gigpo model`.
pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    match args.command {
        ModelCommand::Score(a) => score(a),
        ModelCommand::Generate(a) => generate(a),
        ModelCommand::Convert(a) => convert(&a),
        ModelCommand::Parity(a) => parity(&a),
        ModelCommand::Bench(a) => bench(&a),
    }
}

fn convert(a: &ConvertArgs) -> anyhow::Result<()> {
    convert_gguf(&a.model, &a.out)
        .with_context(|| format!("converting {} into {}", a.model.display(), a.out.display()))?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn load(src: &ModelSource) -> anyhow::Result<Policy> {
    let device = open_device(src.device.parse()?)?;
    let mut policy = load_on(&src.model, src.tiny_seed, &device)?;
    if let Some(ad) = &src.adapter {
        policy
            .apply_adapter(ad)
            .with_context(|| format!("loading adapter from {}", ad.display()))?;
    }
    Ok(policy)
}

fn prompt_ids(policy: &Policy, src: &ModelSource, prompt: &str) -> anyhow::Result<Vec<u32>> {
    let tok = policy.tokenizer();
    let text = if src.chat {
        tok.apply_chat(&[ChatMessage::new("user", prompt)], true)?
    } else {
        prompt.to_string()
    };
    Ok(tok.encode(&text)?)
}

fn score(a: ScoreArgs) -> anyhow::Result<()> {
    let policy = load(&a.source)?;
    let prompt = prompt_ids(&policy, &a.source, &a.prompt)?;
    if prompt.is_empty() {
        bail!(
            "--prompt encodes to no tokens; a response is scored given at least one prompt token"
        );
    }
    let response = policy.tokenizer().encode(&a.response)?;
    let seq = [prompt.clone(), response.clone()].concat();
    let scores = policy.score(&[seq], &[prompt.len()], ScoreMode::OLD)?;
    let logprobs = scores.logprob_rows()?.remove(0);
    if a.json {
        // Key order as in the interface description: tokens, then logprobs.
        let tokens = serde_json::to_string(&response)?;
        let logprobs = serde_json::to_string(&logprobs)?;
        println!("{{\"tokens\": {tokens}, \"logprobs\": {logprobs}}}");
        return Ok(());
    }
    let tok = policy.tokenizer();
    println!("{:>8}  {:>10}  token", "id", "logprob");
    for (id, lp) in response.iter().zip(&logprobs) {
        println!("{id:>8}  {lp:>10.4}  {:?}", tok.decode_raw(&[*id])?);
    }
    println!(
        "total log-probability {:.4} over {} tokens",
        logprobs.iter().sum::<f32>(),
        logprobs.len()
    );
    Ok(())
}

fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    let policy = load(&a.source)?;
    let prompt = prompt_ids(&policy, &a.source, &a.prompt)?;
    if prompt.is_empty() {
        bail!("--prompt encodes to no tokens");
    }
    let params = SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        max_new_tokens: a.max_new_tokens,
        stop_strings: a.stop,
    };
    let g = policy.generate(&[prompt], &params, a.seed)?.remove(0);
    if a.json {
        println!("{}", serde_json::to_string(&g)?);
        return Ok(());
    }
    println!("{}", g.text);
    let why = match &g.finish_reason {
        FinishReason::Eos => "end of sequence".to_string(),
        FinishReason::Stop(s) => format!("stop string {s:?}"),
        FinishReason::Length => "length limit".to_string(),
    };
    eprintln!("[{} tokens, stopped at {why}]", g.tokens.len());
    Ok(())
}
