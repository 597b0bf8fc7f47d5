//! `gigpo eval`: play held-out levels with a checkpoint's policy.

use std::path::PathBuf;

use anyhow::Result;
use gigpo_train::eval::{evaluate, load_checkpoint};

/// Options of `gigpo eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A checkpoint directory (`RUN_DIR/checkpoints/iter-N`).
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Held-out levels to play (default: the run's `eval.episodes`).
    #[arg(long)]
    episodes: Option<usize>,
    /// Sampling temperature (default: the run's `eval.temperature`; 0 = greedy).
    #[arg(long)]
    temperature: Option<f64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let (policy, cfg) = load_checkpoint(&args.checkpoint)?;
    let episodes = args.episodes.unwrap_or(cfg.eval.episodes);
    let temperature = args.temperature.unwrap_or(cfg.eval.temperature);
    let r = evaluate(&policy, &cfg, episodes, temperature)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "episodes {}  success_rate {:.4}  mean_return {:.4}  episode_length {:.2}  invalid_action_rate {:.4}",
            r.episodes, r.success_rate, r.mean_return, r.episode_length, r.invalid_action_rate
        );
    }
    Ok(())
}
