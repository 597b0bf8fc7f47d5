//! `gigpo plot`: learning curves of one or more runs as a PNG.

use std::path::PathBuf;

use anyhow::Result;

/// Options of `gigpo plot`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run directories (each with a metrics.jsonl); several overlay in one picture.
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// Output PNG (default: RUN_DIR/curves.png for one run, curves.png for several).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| match args.runs.as_slice() {
            [one] => one.join("curves.png"),
            _ => PathBuf::from("curves.png"),
        });
    for warning in gigpo_train::plot::plot_runs(&args.runs, &out)? {
        eprintln!("warning: {warning}");
    }
    println!("{}", out.display());
    Ok(())
}
