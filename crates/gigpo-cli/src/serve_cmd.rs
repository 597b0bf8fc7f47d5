//! `gigpo env serve`: serve a built-in environment as an OpenEnv server.

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Built-in environment to serve.
    pub env: String,
}

pub fn run(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("`gigpo env serve` is not available in this build")
}
