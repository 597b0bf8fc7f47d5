//! `gigpo`: train language-model agents with Group-in-Group Policy Optimization.
//!
//! Each subcommand lives in its own module; this file only parses and dispatches.

mod advantages;
mod device_load;
mod env_cmd;
mod eval_cmd;
mod model_bench;
mod model_cmd;
mod plot_cmd;
mod serve_cmd;
mod train_cmd;

use clap::{Parser, Subcommand};

/// Tensors of a training step are allocated and freed thousands of times a second; mimalloc
/// reuses their memory where the system allocator maps and unmaps it from the kernel each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gigpo",
    version,
    about = "Train language-model agents with GiGPO"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compute GiGPO / GRPO / RLOO advantages for trajectories in a JSON-lines file.
    Advantages(advantages::Args),
    /// Play, inspect and serve environments.
    Env(env_cmd::EnvArgs),
    /// Score or sample text with a policy model.
    Model(model_cmd::ModelArgs),
    /// Train a policy with GiGPO (or GRPO / RLOO) in an environment.
    Train(train_cmd::Args),
    /// Evaluate a checkpoint on held-out levels.
    Eval(eval_cmd::Args),
    /// Draw learning curves of one or more runs to a PNG.
    Plot(plot_cmd::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text the message already
/// holds (an error that shows its source in its own message).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Advantages(args) => advantages::run(args),
        Command::Env(args) => env_cmd::run(args),
        Command::Model(args) => model_cmd::run(args),
        Command::Train(args) => train_cmd::run(args),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Plot(args) => plot_cmd::run(args),
    }
}
