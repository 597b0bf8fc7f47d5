//! Steps per second through each remote transport, against a trivial environment on loopback,
//! with 1, 16 and 256 concurrent sessions (one thread per session, as the pool steps them).
//!
//! ```text
//! GIGPO_PYTHON=/path/to/venv/bin/python cargo bench -p gigpo-env --bench remote
//! ```
//!
//! Transports: in-process calls (the baseline), our OpenEnv server over WebSocket, our stdio
//! server as a subprocess (this benchmark re-runs itself as the child), the Python adapter over
//! stdio, and the Python adapter hosted by the openenv-core server over WebSocket. The Python rows
//! need `GIGPO_PYTHON` (default `python3`) with python/requirements-test.txt installed; without it
//! they print `n/a`. `GIGPO_BENCH_SECONDS` sets the measuring time per cell (default 2).

use gigpo_env::remote::server::{serve_stdio, EnvFactory, ServeOptions, Server};
use gigpo_env::remote::RemoteSpec;
use gigpo_env::{EnvError, Environment, Observation, StepOutcome};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const SESSIONS: [usize; 3] = [1, 16, 256];
const CHILD_FLAG: &str = "GIGPO_BENCH_STDIO_CHILD";

/// Returns the same observation forever.
struct Trivial;

fn observation() -> Observation {
    Observation {
        text: "ok".into(),
        anchor: "ok".into(),
        admissible_actions: None,
    }
}

impl Environment for Trivial {
    fn name(&self) -> &str {
        "trivial"
    }
    fn instructions(&self) -> String {
        "Say anything.".into()
    }
    fn reset(&mut self, _seed: u64) -> Result<Observation, EnvError> {
        Ok(observation())
    }
    fn step(&mut self, _action: &str) -> Result<StepOutcome, EnvError> {
        Ok(StepOutcome {
            observation: observation(),
            reward: 0.0,
            terminated: false,
            truncated: false,
            won: false,
            action_valid: true,
        })
    }
}

fn trivial_factory() -> EnvFactory {
    Arc::new(|| Ok(Box::new(Trivial) as Box<dyn Environment>))
}

/// Step `sessions` environments from `sessions` threads for `seconds`; steps per second.
fn measure(
    make: &(dyn Fn() -> Result<Box<dyn Environment>, EnvError> + Sync),
    sessions: usize,
    seconds: f64,
) -> Result<f64, String> {
    let start = Barrier::new(sessions + 1);
    let stop = AtomicBool::new(false);
    let steps = AtomicU64::new(0);
    let failed = std::sync::Mutex::new(None::<String>);
    let elapsed = std::thread::scope(|scope| {
        for i in 0..sessions {
            let (start, stop, steps, failed) = (&start, &stop, &steps, &failed);
            scope.spawn(move || {
                let ready = make().and_then(|mut env| env.reset(i as u64).map(|_| env));
                start.wait();
                let mut env = match ready {
                    Ok(env) => env,
                    Err(e) => return *failed.lock().unwrap() = Some(e.to_string()),
                };
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = env.step("<action>noop</action>") {
                        *failed.lock().unwrap() = Some(e.to_string());
                        break;
                    }
                    n += 1;
                }
                steps.fetch_add(n, Ordering::Relaxed);
            });
        }
        start.wait();
        let began = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        began
    });
    // Threads finish their last step after `stop`; count the time until they all did.
    let seconds = elapsed.elapsed().as_secs_f64();
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e);
    }
    Ok(steps.into_inner() as f64 / seconds)
}

fn spec(endpoint: &str) -> RemoteSpec {
    let mut spec = RemoteSpec::new(endpoint.parse().expect("valid endpoint"));
    spec.timeout_s = 60.0;
    spec.connect_timeout_s = 60.0;
    spec
}

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../python")
}

fn python() -> Option<String> {
    let python = std::env::var("GIGPO_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import gymnasium, openenv, uvicorn"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

/// The adapter served by openenv-core on a free port; killed on drop.
struct OpenEnvProcess(Child, u16);

impl OpenEnvProcess {
    fn start(python: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port_file = dir.path().join("port");
        let child = Command::new(python)
            .arg(python_dir().join("gigpo_env_adapter.py"))
            .args([
                "trivial_env:make_env",
                "--openenv",
                "--port",
                "0",
                "--max-sessions",
                "300",
                "--exit-on-stdin-eof",
                "--port-file",
            ])
            .arg(&port_file)
            .current_dir(python_dir().join("tests_support"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // openenv-core logs a traceback for every client that closes its session promptly.
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut process = OpenEnvProcess(child, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                process.1 = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad port file {text:?}"))?;
                return Ok(process);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("the openenv-core server did not start within 60 s".into())
    }
}

impl Drop for OpenEnvProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn shell_word(word: &str) -> String {
    shlex::try_quote(word)
        .map(|w| w.into_owned())
        .unwrap_or_else(|_| word.to_string())
}

fn row(
    name: &str,
    seconds: f64,
    make: &(dyn Fn() -> Result<Box<dyn Environment>, EnvError> + Sync),
) {
    let mut cells = Vec::new();
    for sessions in SESSIONS {
        cells.push(match measure(make, sessions, seconds) {
            Ok(rate) => format!("{rate:>10.0}"),
            Err(e) => {
                eprintln!("{name}, {sessions} sessions: {e}");
                format!("{:>10}", "failed")
            }
        });
    }
    println!("| {name:<44} | {} |", cells.join(" | "));
    std::io::stdout().flush().ok();
}

fn na_row(name: &str, why: &str) {
    println!(
        "| {name:<44} | {:>10} | {:>10} | {:>10} |",
        "n/a", "n/a", "n/a"
    );
    eprintln!("{name}: {why}");
}

fn main() {
    if std::env::var(CHILD_FLAG).is_ok() {
        let (stdin, stdout) = (std::io::stdin().lock(), std::io::stdout().lock());
        serve_stdio(trivial_factory(), stdin, stdout, 1 << 20).expect("stdio child");
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks for benchmark names; this one is a table.
    }
    let seconds: f64 = std::env::var("GIGPO_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    println!("steps per second, trivial environment, loopback, {seconds} s per cell\n");
    println!(
        "| {:<44} | {:>10} | {:>10} | {:>10} |",
        "transport", "1 session", "16", "256"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(46),
        "-".repeat(12),
        "-".repeat(12),
        "-".repeat(12)
    );

    row("in-process (no transport)", seconds, &|| {
        Ok(Box::new(Trivial))
    });

    let options = ServeOptions {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        max_sessions: 1024,
        max_message_bytes: 1 << 20,
        ..ServeOptions::default()
    };
    let server = Server::start(trivial_factory(), options).expect("server");
    let ws = spec(&format!("ws://{}", server.local_addr()));
    row("WebSocket → gigpo server (Rust)", seconds, &|| ws.build());
    drop(server);

    let me = std::env::current_exe().expect("benchmark path");
    let stdio_self = spec(&format!(
        "cmd:env {CHILD_FLAG}=1 {}",
        shell_word(&me.to_string_lossy())
    ));
    row(
        "stdio → gigpo stdio server (Rust, 1 process)",
        seconds,
        &|| stdio_self.build(),
    );

    let Some(python) = python() else {
        let why = "no Python with gymnasium + openenv-core (set GIGPO_PYTHON)";
        na_row("stdio → Python adapter (1 process)", why);
        na_row("stdio → Python adapter (4 processes)", why);
        na_row("WebSocket → openenv-core server (Python)", why);
        return;
    };
    let adapter = python_dir().join("gigpo_env_adapter.py");
    let tests_support = python_dir().join("tests_support");
    let command = format!(
        "cmd:env PYTHONPATH={} {} {} trivial_env:make_env",
        shell_word(&tests_support.to_string_lossy()),
        shell_word(&python),
        shell_word(&adapter.to_string_lossy())
    );
    let stdio_py = spec(&command);
    row("stdio → Python adapter (1 process)", seconds, &|| {
        stdio_py.build()
    });
    let mut stdio_py4 = spec(&format!("{command} --name four"));
    stdio_py4.processes = 4;
    row("stdio → Python adapter (4 processes)", seconds, &|| {
        stdio_py4.build()
    });

    match OpenEnvProcess::start(&python) {
        Ok(process) => {
            let openenv = spec(&format!("openenv+ws://127.0.0.1:{}", process.1));
            row(
                "WebSocket → openenv-core server (Python)",
                seconds,
                &|| openenv.build(),
            );
        }
        Err(e) => na_row("WebSocket → openenv-core server (Python)", &e),
    }
}
