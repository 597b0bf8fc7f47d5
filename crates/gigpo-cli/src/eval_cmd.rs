//! `gigpo eval`: play held-out levels with a checkpoint's policy, greedy and sampled, beside the
//! random and optimal baselines on the same levels.

use std::path::PathBuf;

use anyhow::Result;
use gigpo_train::policy::load_checkpoint;
use gigpo_train::Evaluator;

/// Options of `gigpo eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A checkpoint directory (`RUN_DIR/checkpoints/iter-N`).
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Held-out levels to play (default: all of the run's `eval.levels`, 256 unless changed).
    #[arg(long)]
    episodes: Option<usize>,
    /// Temperature of the sampled evaluation (default: the run's `eval.temperature`).
    #[arg(long)]
    temperature: Option<f64>,
    /// Nucleus threshold of the sampled evaluation (default: the run's `eval.top_p`).
    #[arg(long)]
    top_p: Option<f64>,
    /// Top-k of the sampled evaluation (default: the run's `eval.top_k`).
    #[arg(long)]
    top_k: Option<usize>,
    /// Skip the greedy evaluation.
    #[arg(long)]
    no_greedy: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let (policy, mut cfg) = load_checkpoint(&args.checkpoint)?;
    if let Some(t) = args.temperature {
        cfg.eval.temperature = t;
    }
    if let Some(p) = args.top_p {
        cfg.eval.top_p = p;
    }
    if let Some(k) = args.top_k {
        cfg.eval.top_k = k;
    }
    cfg.eval.greedy = !args.no_greedy;
    cfg.validate()?;
    let evaluator = Evaluator::new(cfg.eval_plan())?;
    let levels = args.episodes.unwrap_or(cfg.eval.levels);
    let r = evaluator.evaluate_first(&policy, levels)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{}", r.summary());
    }
    Ok(())
}
