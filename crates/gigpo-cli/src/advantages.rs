//! `gigpo advantages`: advantages for trajectories in a JSON-lines file (docs/formats.md).

use anyhow::{bail, Context, Result};
use gigpo_core::{
    compute, read_trajectories, AdvantageConfig, AdvantageError, BatchBuilder, Combine, Convention,
    Diagnostics, Estimator, Levels, Norm, StepAdvantage, StepInput,
};
use gigpo_train::fsutil::write_atomic;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trajectories, one JSON object per line (`-` for standard input).
    #[arg(long, short)]
    input: PathBuf,
    /// Where to write one line of per-step advantages per trajectory (`-` for standard output).
    #[arg(long, short)]
    output: PathBuf,
    /// Also write the diagnostics as one JSON object to this file (`-` for standard output).
    #[arg(long)]
    diagnostics: Option<PathBuf>,
    /// Start from a preset's conventions: `paper` (default) or `verl-agent`.
    #[arg(long)]
    preset: Option<Convention>,
    /// gigpo | grpo | rloo [default: gigpo]
    #[arg(long = "advantage_estimator", alias = "advantage-estimator")]
    estimator: Option<Estimator>,
    /// Discount γ of the step returns [default: 0.95]
    #[arg(long, allow_negative_numbers = true)]
    gamma: Option<f64>,
    /// Weight ω of the step advantage [default: 1.0]
    #[arg(
        long = "gigpo_step_advantage_weight",
        alias = "gigpo-step-advantage-weight",
        allow_negative_numbers = true
    )]
    step_advantage_weight: Option<f64>,
    /// std | fixed [default: std; verl-agent: fixed]
    #[arg(long)]
    norm: Option<Norm>,
    /// The constant F when --norm fixed [default: 1.0]
    #[arg(
        long = "fixed_norm",
        alias = "fixed-norm",
        allow_negative_numbers = true
    )]
    fixed_norm: Option<f64>,
    /// additive | convex [default: additive]
    #[arg(long)]
    combine: Option<Combine>,
    /// both | episode | step: the terms of Eq. 8 kept, for ablations [default: both]
    #[arg(long)]
    levels: Option<Levels>,
    /// Penalty λ for steps whose action was invalid [default: 0.1]
    #[arg(
        long = "invalid_action_penalty",
        alias = "invalid-action-penalty",
        allow_negative_numbers = true
    )]
    invalid_action_penalty: Option<f64>,
    /// Group text anchors whose similarity ratio is ≥ this threshold, in (0, 1) [default: exact]
    #[arg(
        long = "anchor_similarity",
        alias = "anchor-similarity",
        allow_negative_numbers = true
    )]
    anchor_similarity: Option<f64>,
    /// ε added to the standard deviation [default: 1e-6]
    #[arg(long, allow_negative_numbers = true)]
    epsilon: Option<f64>,
}

impl Args {
    fn config(&self) -> AdvantageConfig {
        let mut cfg = match self.preset {
            Some(Convention::VerlAgent) => AdvantageConfig::verl_agent(),
            _ => AdvantageConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = self.$field { cfg.$field = v; })* };
        }
        set!(
            estimator,
            gamma,
            step_advantage_weight,
            norm,
            fixed_norm,
            combine,
            levels,
            invalid_action_penalty,
            epsilon
        );
        if self.anchor_similarity.is_some() {
            cfg.anchor_similarity = self.anchor_similarity;
        }
        cfg
    }
}

/// One output line: the input's ids and a value set per step (docs/formats.md).
#[derive(Serialize)]
struct OutputLine<'a> {
    group: &'a Value,
    trajectory: &'a Value,
    steps: &'a [StepAdvantage],
}

/// The input's bytes (`-`: standard input).
fn read_input(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading standard input")?;
    } else {
        bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(bytes)
}

/// Writes `bytes` to `path`, or to standard output for `-`.
fn write_output(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .context("writing standard output")?;
        return Ok(());
    }
    Ok(write_atomic(path, bytes)?)
}

pub fn run(args: Args) -> Result<()> {
    let cfg = args.config();
    cfg.validate()?;
    if args.output.as_os_str() == "-"
        && args
            .diagnostics
            .as_deref()
            .is_some_and(|d| d.as_os_str() == "-")
    {
        bail!("--output and --diagnostics cannot both be standard output (-)");
    }
    let name = args.input.display().to_string();
    let trajs = read_trajectories(&name, &read_input(&args.input)?)?;
    let mut builder = BatchBuilder::new();
    let mut lines: HashMap<(String, String), usize> = HashMap::new();
    for t in &trajs {
        let (g, id) = (t.group_name(), t.trajectory_name());
        let steps = t.steps.iter().map(|s| StepInput {
            anchor: &s.anchor,
            reward: s.reward,
            action_valid: s.action_valid,
            action: s.action.as_deref(),
        });
        builder
            .push_trajectory(&g, &id, steps)
            .with_context(|| format!("{name} line {}", t.line))?;
        lines.insert((g, id), t.line);
    }
    let batch = builder.build();
    let adv = compute(&batch, &cfg).map_err(|e| with_line(e, &name, &lines))?;
    let mut out = Vec::new();
    for (t, tr) in trajs.iter().zip(batch.trajectories()) {
        let row = OutputLine {
            group: &t.group,
            trajectory: &t.trajectory,
            steps: &adv.steps[tr.steps.clone()],
        };
        serde_json::to_writer(&mut out, &row)?;
        out.push(b'\n');
    }
    if let Some(path) = &args.diagnostics {
        let mut text = serde_json::to_vec_pretty(&adv.diagnostics)?;
        text.push(b'\n');
        write_output(path, &text)?;
    }
    write_output(&args.output, &out)?;
    eprint!("{}", describe(&cfg, &adv.diagnostics));
    Ok(())
}

fn with_line(
    e: AdvantageError,
    name: &str,
    lines: &HashMap<(String, String), usize>,
) -> anyhow::Error {
    let key = match &e {
        AdvantageError::NonFiniteReward {
            group, trajectory, ..
        }
        | AdvantageError::EmptyTrajectory { group, trajectory } => {
            Some((group.clone(), trajectory.clone()))
        }
        _ => None,
    };
    match key.and_then(|k| lines.get(&k)) {
        Some(line) => anyhow::Error::new(e).context(format!("{name} line {line}")),
        None => anyhow::Error::new(e).context(name.to_owned()),
    }
}

/// The diagnostics as a few lines for a person.
fn describe(cfg: &AdvantageConfig, d: &Diagnostics) -> String {
    let sizes: Vec<String> = d
        .step_group_sizes
        .iter()
        .map(|(s, n)| format!("{s}:{n}"))
        .collect();
    let actions = match d.distinct_action_step_group_share {
        Some(s) => format!("{:.1}%", 100.0 * s),
        None => "unknown (no action keys)".to_string(),
    };
    format!(
        "estimator {} | {} groups, {} trajectories, {} steps\n\
         step groups: {} (size:count {}), {:.1}% of size 1\n\
         steps in step groups of size >= 2: {:.1}%\n\
         step groups of size >= 2 with distinct returns: {:.1}%, with distinct actions: {}\n\
         zero-variance step groups (size >= 2): {:.1}% | zero-variance episode groups: {:.1}%\n\
         mean |A|: {:.4} | mean |A^E|: {:.4} | mean |A^S|: {:.4}\n",
        cfg.estimator,
        d.episode_groups,
        d.trajectories,
        d.steps,
        d.step_groups,
        sizes.join(" "),
        100.0 * d.singleton_step_group_share,
        100.0 * d.step_group_share,
        100.0 * d.distinct_return_step_group_share,
        actions,
        100.0 * d.zero_variance_step_group_share,
        100.0 * d.zero_variance_episode_group_share,
        d.mean_abs_advantage,
        d.mean_abs_episode_advantage,
        d.mean_abs_step_advantage,
    )
}
