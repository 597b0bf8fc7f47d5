//! Helpers shared by the remote-environment integration tests: finding Python, starting the
//! test servers, and a tiny built-in environment to serve.
#![allow(dead_code)]

use gigpo_env::remote::{RemoteEnv, RemoteSpec};
use gigpo_env::{EnvError, Environment, Observation, StepOutcome};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// The `python/` directory of the repository.
pub fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../python")
}

/// A file under `python/tests_support/`.
pub fn support_script(name: &str) -> String {
    python_dir()
        .join("tests_support")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// The Python interpreter for the tests (`GIGPO_PYTHON`, default `python3`), after checking that
/// it has the packages the tests use. `None` when `GIGPO_SKIP_PYTHON_TESTS=1`. Panics with
/// installation instructions when the packages are missing: these tests are never skipped
/// silently.
pub fn python() -> Option<String> {
    if std::env::var("GIGPO_SKIP_PYTHON_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("GIGPO_SKIP_PYTHON_TESTS=1: skipping a test that needs Python");
        return None;
    }
    static CHECKED: OnceLock<String> = OnceLock::new();
    Some(CHECKED.get_or_init(check_python).clone())
}

fn check_python() -> String {
    let python = std::env::var("GIGPO_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import importlib.util as u\n\
                  missing = [m for m in ('gymnasium', 'openenv', 'uvicorn') if u.find_spec(m) is None]\n\
                  print(' '.join(missing))";
    let check = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::null())
        .output();
    match check {
        Ok(out) if out.status.success() && out.stdout.trim_ascii().is_empty() => python,
        Ok(out) => panic!(
            "the remote-environment tests need Python packages that `{python}` lacks: {}{}\n\
             Install them with `{python} -m pip install -r python/requirements-test.txt` \
             (openenv-core, gymnasium; in a virtual environment), point GIGPO_PYTHON at that \
             interpreter, or set GIGPO_SKIP_PYTHON_TESTS=1 to skip these tests.",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "cannot run the Python interpreter `{python}` ({e}); set GIGPO_PYTHON to a Python \
             with the packages of python/requirements-test.txt, or GIGPO_SKIP_PYTHON_TESTS=1"
        ),
    }
}

/// A spec for `endpoint` with the given per-call and connection timeouts, in seconds.
pub fn spec_with_timeouts(endpoint: &str, timeout_s: f64, connect_timeout_s: f64) -> RemoteSpec {
    let mut spec = RemoteSpec::new(endpoint.parse().unwrap());
    spec.timeout_s = timeout_s;
    spec.connect_timeout_s = connect_timeout_s;
    spec
}

/// The message of a remote-environment error; any other error fails the test.
pub fn remote_message(err: EnvError) -> String {
    match err {
        EnvError::Remote(message) => message,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

/// Steps `env` with `action`, which must fail within `within` for want of a reply within the
/// 1 s `timeout_s`.
pub fn step_times_out(env: &mut RemoteEnv, action: &str, within: Duration) {
    let started = Instant::now();
    let message = remote_message(env.step(action).unwrap_err());
    assert!(started.elapsed() < within, "{:?}", started.elapsed());
    assert!(message.contains("no reply to step within 1s"), "{message}");
}

/// A `cmd:` endpoint running `script` (under tests_support) with `python`.
pub fn cmd_endpoint(python: &str, script: &str, args: &[&str]) -> String {
    let mut words = vec![python.to_string(), support_script(script)];
    words.extend(args.iter().map(|a| a.to_string()));
    let quoted: Vec<String> = words
        .iter()
        .map(|w| shlex::try_quote(w).unwrap().into_owned())
        .collect();
    format!("cmd:{}", quoted.join(" "))
}

/// A Python server process that prints `PORT <n>` when it listens. Killed on drop; it also exits
/// by itself when its standard input closes (when this test process ends).
pub struct PyServer {
    child: Child,
    pub port: u16,
}

impl PyServer {
    /// Start `python script args…` and wait (at most 60 s) for its port line.
    pub fn start(python: &str, script: &str, args: &[&str]) -> PyServer {
        Self::start_file(python, &support_script(script), args)
    }

    /// Start `python path args…` (any file) and wait for its port line.
    pub fn start_file(python: &str, script: &str, args: &[&str]) -> PyServer {
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {script}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("PORT ") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(port)) => port,
            other => {
                let _ = child.kill();
                panic!("{script} did not report its port within 60 s: {other:?}");
            }
        };
        PyServer { child, port }
    }

    /// Kill the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tiny environment: walk right from 0 to a goal of `2 + seed % 3`; `left` steps back; other
/// text is invalid. Reward −0.1 a step, +1 at the goal (won). Cut off after 6 steps.
pub struct Walk {
    pos: u64,
    goal: u64,
    steps: u32,
    running: bool,
}

impl Walk {
    pub fn new() -> Self {
        Walk {
            pos: 0,
            goal: 2,
            steps: 0,
            running: false,
        }
    }

    fn observation(&self) -> Observation {
        Observation {
            text: format!("at {} of {}", self.pos, self.goal),
            anchor: format!("{}/{}", self.pos, self.goal),
            admissible_actions: Some(vec!["left".into(), "right".into()]),
        }
    }
}

impl Default for Walk {
    fn default() -> Self {
        Self::new()
    }
}

impl Environment for Walk {
    fn name(&self) -> &str {
        "walk"
    }

    fn instructions(&self) -> String {
        "Walk right to the goal.".into()
    }

    fn reset(&mut self, seed: u64) -> Result<Observation, EnvError> {
        self.goal = 2 + seed % 3;
        self.pos = 0;
        self.steps = 0;
        self.running = true;
        Ok(self.observation())
    }

    fn step(&mut self, action_text: &str) -> Result<StepOutcome, EnvError> {
        if !self.running {
            return Err(EnvError::NotRunning);
        }
        self.steps += 1;
        let action = action_text
            .split("<action>")
            .last()
            .and_then(|s| s.split("</action>").next())
            .unwrap_or("")
            .trim();
        let valid = matches!(action, "left" | "right");
        match action {
            "right" => self.pos += 1,
            "left" => self.pos = self.pos.saturating_sub(1),
            _ => {}
        }
        let won = self.pos == self.goal;
        let truncated = !won && self.steps >= 6;
        self.running = !(won || truncated);
        Ok(StepOutcome {
            observation: self.observation(),
            reward: if won { 1.0 } else { -0.1 },
            terminated: won,
            truncated,
            won,
            action_valid: valid,
        })
    }
}
