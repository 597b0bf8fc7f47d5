//! `gigpo train`: train a policy with GiGPO (or GRPO / RLOO) in an environment.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use gigpo_train::config::TrainConfig;
use gigpo_train::Trainer;

/// Options of `gigpo train`. Without any, trains the tiny built-in model on 6×6 Sokoban.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A TOML configuration file (fields not in it keep their defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one field by its dotted path, e.g. `--set rollout.groups=4` (repeatable).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
    /// Training iterations.
    #[arg(long)]
    iterations: Option<usize>,
    /// Base seed.
    #[arg(long)]
    seed: Option<u64>,
    /// A Hugging Face model directory or a Llama/Qwen2 GGUF file (default: the tiny built-in
    /// model).
    #[arg(long, value_name = "DIR|FILE.gguf")]
    model: Option<PathBuf>,
    /// A built-in environment with its defaults: sokoban or frozenlake.
    #[arg(long)]
    env: Option<String>,
    /// The run directory (metrics, checkpoints, plots).
    #[arg(long = "run-dir", value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its newest checkpoint (only --iterations may change);
    /// a run stopped before its first checkpoint starts again with its saved configuration.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Start a fresh run even if the run directory holds an earlier one, removing that run's
    /// files (config.toml, metrics.jsonl, warm_start.jsonl, checkpoints/, tensorboard/,
    /// curves.png, vllm-adapter/) first.
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    // The seed page's flags (`--advantage_estimator`, ...).
    #[command(flatten)]
    seed_flags: SeedFlags,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The flags of the seed page (docs/formats.md), accepted as written; each sets one field of
/// the configuration, as `--set FIELD=VALUE` would.
#[derive(clap::Args, Debug)]
pub struct SeedFlags {
    /// Advantage estimator: gigpo, grpo or rloo (= --set algorithm.estimator=...).
    #[arg(long = "advantage_estimator", value_name = "NAME")]
    advantage_estimator: Option<String>,
    /// Train through an environment (must be true) (= --set use_gym_env=...).
    #[arg(long = "use_gym_env", value_name = "BOOL")]
    use_gym_env: Option<String>,
    /// Step-advantage weight ω (= --set algorithm.step_advantage_weight=...).
    #[arg(long = "gigpo_step_advantage_weight", value_name = "W")]
    gigpo_step_advantage_weight: Option<String>,
    /// Group size N (= --set rollout.num_generations=...).
    #[arg(long = "num_generations", value_name = "N")]
    num_generations: Option<String>,
    /// KL coefficient β (= --set loss.beta=...).
    #[arg(long, value_name = "BETA")]
    beta: Option<String>,
}

impl SeedFlags {
    /// The flags given, as (dotted field, value).
    fn settings(&self) -> Vec<(&'static str, &str)> {
        [
            ("algorithm.estimator", &self.advantage_estimator),
            ("use_gym_env", &self.use_gym_env),
            (
                "algorithm.step_advantage_weight",
                &self.gigpo_step_advantage_weight,
            ),
            ("rollout.num_generations", &self.num_generations),
            ("loss.beta", &self.beta),
        ]
        .into_iter()
        .filter_map(|(field, v)| Some((field, v.as_deref()?)))
        .collect()
    }
}

impl Args {
    fn has_overrides(&self) -> bool {
        self.config.is_some()
            || !self.set.is_empty()
            || self.seed.is_some()
            || self.model.is_some()
            || self.env.is_some()
            || self.run_dir.is_some()
            || !self.seed_flags.settings().is_empty()
    }
}

/// The configuration the options describe.
pub fn build_config(args: &Args) -> Result<TrainConfig> {
    let mut cfg = match &args.config {
        Some(path) => TrainConfig::from_file(path)?,
        None => TrainConfig::default(),
    };
    if let Some(env) = &args.env {
        cfg.set_env(env)?;
    }
    for item in &args.set {
        let (field, value) = item
            .split_once('=')
            .with_context(|| format!("--set {item:?}: expected FIELD=VALUE"))?;
        cfg.set(field.trim(), value.trim())?;
    }
    for (field, value) in args.seed_flags.settings() {
        cfg.set(field, value)?;
    }
    if let Some(n) = args.iterations {
        cfg.iterations = n;
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    if let Some(m) = &args.model {
        cfg.model.path = Some(m.clone());
    }
    if let Some(d) = &args.run_dir {
        cfg.run_dir = d.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

pub fn run(args: Args) -> Result<()> {
    let mut trainer = if let Some(dir) = &args.resume {
        if args.has_overrides() {
            bail!("--resume continues with the run's saved configuration; only --iterations may be given with it");
        }
        let trainer = Trainer::resume(dir, args.iterations)?;
        let (done, total) = (trainer.iterations_done(), trainer.config().iterations);
        if done >= total {
            eprintln!(
                "the run in {} has done all its {total} iterations; nothing to train \
                 (give --iterations N with N > {total} to go on)",
                dir.display()
            );
        }
        trainer
    } else {
        let cfg = build_config(&args)?;
        if args.print_config {
            print!("{}", cfg.resolved()?.to_toml()?);
            return Ok(());
        }
        if args.force {
            Trainer::new_overwriting(cfg)?
        } else {
            Trainer::new(cfg)?
        }
    };
    let run_dir = trainer.config().run_dir.clone();
    let device = trainer.config().model.device;
    crate::device_load::report_auto(device, &device.resolve()?);
    trainer = trainer.with_progress(!args.quiet);
    let summary = trainer.run()?;
    if let Some(first) = &summary.first_eval {
        eprintln!("held-out at the start: {}", first.summary());
    }
    if let Some(last) = &summary.last_eval {
        eprintln!("held-out at the end:   {}", last.summary());
    }
    if let Some(e) = &summary.plot_error {
        eprintln!(
            "warning: could not draw {}: {e}",
            run_dir.join("curves.png").display()
        );
    }
    eprintln!("run directory: {}", run_dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use gigpo_core::Estimator;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn seed_flags_map_to_fields() {
        let flags = [
            ("advantage_estimator", "rloo"),
            ("use_gym_env", "true"),
            ("gigpo_step_advantage_weight", "0.5"),
            ("num_generations", "4"),
            ("beta", "0.0"),
        ];
        let argv = flags
            .iter()
            .flat_map(|(flag, value)| [format!("--{flag}"), value.to_string()]);
        let cli = Cli::parse_from(std::iter::once("gigpo".to_string()).chain(argv));
        let cfg = build_config(&cli.args).unwrap();
        assert_eq!(cfg.algorithm.estimator, Estimator::Rloo);
        assert_eq!(cfg.algorithm.step_advantage_weight, 0.5);
        assert_eq!(cfg.rollout.num_generations, 4);
        assert_eq!(cfg.beta(), 0.0);
    }
}
