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

extern "C" {
    /// mimalloc's setter of one of its options (linked in with the allocator above).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// mimalloc's `mi_option_purge_delay` (the same position in the option enum of mimalloc 2 and 3):
/// milliseconds before freed memory goes back to the kernel, `-1` for never.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Keeps freed memory in the process instead of handing it back to the kernel 10 ms later
/// (mimalloc's default). Every micro-batch of an update frees and allocates again the same few
/// hundred megabytes of activations; handing them back and faulting them in again made an
/// update of SmolLM2-135M on 2 cores take 123 s instead of 71–79 s. The resident size stays
/// at its peak instead of shrinking between updates, a peak 1.4 % above the default's.
/// `MIMALLOC_PURGE_DELAY`, when set, wins.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain setter of an integer option, called before any other thread exists.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// Runs candle's element-wise operations on the calling thread (`CANDLE_NUM_THREADS=1`) unless
/// `CANDLE_NUM_THREADS` is set. candle otherwise keeps a pool of its own beside rayon's, whose
/// idle workers spin for about a millisecond after each element-wise operation and take a core
/// from the matrix products running on rayon's threads: on 2 cores a SmolLM2-135M forward and
/// backward pass took 6.7 s with the pool and 6.0 s without (`bench/model/run.sh`).
fn one_elementwise_pool() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Called first thing in `main`, before any other thread exists.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

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
    keep_freed_memory();
    one_elementwise_pool();
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
