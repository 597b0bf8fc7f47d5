//! `gigpo env serve ENV`: serve a built-in environment to other programs.
//!
//! By default as an OpenEnv server on `127.0.0.1:8000` (`/ws`, `/health`, `/schema`,
//! `/metadata`), so the stock OpenEnv client and other frameworks can use it; with `--stdio`, over
//! standard input/output with the subprocess framing of docs/remote-environments.md. Only the
//! loopback interface is listened on unless `--host` says otherwise.

use anyhow::{bail, Context};
use gigpo_env::remote::server::{
    serve_stdio, EnvFactory, ServeOptions, Server, DEFAULT_IDLE_TIMEOUT_S,
};
use gigpo_env::spec::EnvSpec;
use serde::Deserialize;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `gigpo env serve` arguments.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Built-in environment to serve: `sokoban` or `frozenlake`.
    pub env: String,
    /// TOML file whose `[env]` table configures the environment; its `kind` must be ENV.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on. The default serves this machine only; give e.g. `0.0.0.0` to accept
    /// connections from the network.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Serve over standard input/output instead of the network.
    #[arg(long, conflicts_with_all = ["host", "port", "max_sessions", "idle_timeout"])]
    pub stdio: bool,
    /// Most concurrent sessions; more are refused with a CAPACITY_REACHED error.
    #[arg(long, default_value_t = 1024)]
    pub max_sessions: usize,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = gigpo_env::remote::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Close a session that sends no message for this many seconds, freeing its slot (0: never).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_IDLE_TIMEOUT_S)]
    pub idle_timeout: u64,
}

/// The `[env]` table of a configuration file.
#[derive(Deserialize)]
struct ConfigDoc {
    env: EnvSpec,
}

/// Runs `gigpo env serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let spec = spec_of(&args)?;
    if args.max_sessions == 0 {
        bail!("--max-sessions must be at least 1");
    }
    if args.max_message_bytes < 1024 {
        bail!("--max-message-bytes must be at least 1024");
    }
    let name = spec.name();
    let factory: EnvFactory = Arc::new(move || spec.build());
    if args.stdio {
        let stdin = std::io::stdin().lock();
        let stdout = std::io::stdout().lock();
        return serve_stdio(factory, stdin, stdout, args.max_message_bytes)
            .with_context(|| format!("serving {name} over standard input/output"));
    }
    let options = ServeOptions {
        addr: SocketAddr::new(args.host, args.port),
        max_sessions: args.max_sessions,
        max_message_bytes: args.max_message_bytes,
        idle_timeout: (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout)),
    };
    let server = Server::start(factory, options)
        .with_context(|| format!("serving {name} on {}:{}", args.host, args.port))?;
    let addr = server.local_addr();
    eprintln!(
        "serving {name} as an OpenEnv server: ws://{addr}/ws (health: http://{addr}/health); \
         Ctrl-C stops"
    );
    println!("listening on http://{addr}");
    std::io::stdout().flush().ok();
    server.wait().context("the server stopped")
}

fn spec_of(args: &ServeArgs) -> anyhow::Result<EnvSpec> {
    let named: EnvSpec = args.env.parse()?;
    match &args.config {
        Some(path) => read_config(path, &named),
        None => Ok(named),
    }
}

fn read_config(path: &Path, named: &EnvSpec) -> anyhow::Result<EnvSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let doc: ConfigDoc =
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
    if doc.env.name() != named.name() {
        bail!(
            "config file {} configures `{}`, not `{}`",
            path.display(),
            doc.env.name(),
            named.name()
        );
    }
    Ok(doc.env)
}
