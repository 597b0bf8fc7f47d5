//! Rollouts on vLLM servers (`rollout.backend = "vllm"`): prompts go as token ids to the
//! OpenAI-compatible `/v1/completions` of every endpoint in `rollout.endpoints`, and the
//! generated token ids come back with their log-probabilities; nothing is re-tokenized.
//!
//! - **Spreading.** Each prompt is one request; row `i` of a batch goes to endpoint
//!   `i mod E`, a retry to the next endpoint. Up to `rollout.vllm.concurrency` requests per
//!   endpoint are in flight. Row `i` carries its own seed ([`gigpo_model::row_seed`]), so
//!   members of a group with the same prompt draw different actions.
//! - **Weights.** Only a LoRA adapter can follow training: after every update the trainer
//!   writes the adapter (PEFT layout, atomically) to `ADAPTER_DIR/v<iteration>`, loads it in
//!   place on every endpoint under `rollout.vllm.lora_name` (`/v1/load_lora_adapter` with
//!   `load_inplace`), and checks in `/v1/models` that each endpoint serves that directory.
//!   Rollouts name the adapter as their model.
//! - **Faults.** A request that fails (no answer, a server error) is tried again
//!   `rollout.vllm.retries` times; a prompt no try answered ends its episode as a fault. An
//!   endpoint that answers none of its requests in `rollout.vllm.max_failed_calls` sampling
//!   calls in a row stops the run with an error naming it.
//!
//! The servers must serve the model the trainer trains (`model.path`), with
//! `--enable-lora --max-lora-rank R`, `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`, and
//! `--logprobs-mode processed_logprobs` so that their log-probabilities are those of the
//! tempered distribution the trainer scores (`train/logprob_mismatch` shows any difference).

mod api;
mod config;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use gigpo_model::{
    row_seed, FinishReason, Generation, Policy, SamplingParams, SaveMode, Tokenizer,
};

use crate::context;
use crate::error::{Result, TrainError};
use crate::prompt::PromptStyle;
use crate::sampler::{RowFault, RowResult, Sampler};
use api::{CallError, Choice, Client, CompletionRequest};
pub use config::{check_endpoints, VllmConfig};

/// The directory under the run directory that adapters are written to when
/// `rollout.vllm.adapter_dir` is not set.
pub const ADAPTER_DIR: &str = "vllm-adapter";

/// One server and how its recent sampling calls went.
#[derive(Debug)]
struct Endpoint {
    client: Client,
    /// Sampling calls in a row in which it answered no request.
    failed_calls: AtomicU32,
}

/// Samples on vLLM servers; see the module documentation.
pub struct VllmSampler {
    endpoints: Vec<Endpoint>,
    tokenizer: Tokenizer,
    cfg: VllmConfig,
    /// Where adapter versions are written (absolute).
    adapter_root: PathBuf,
    /// The smallest context the servers serve.
    context: usize,
    /// The adapter version every endpoint serves.
    served: Option<usize>,
}

impl std::fmt::Debug for VllmSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.client.url.as_str())
            .collect();
        f.debug_struct("VllmSampler")
            .field("endpoints", &urls)
            .field("context", &self.context)
            .field("served", &self.served)
            .finish()
    }
}

/// One try of a request on an endpoint.
#[derive(Debug, Clone)]
struct Attempt {
    endpoint: usize,
    error: Option<String>,
}

/// What became of one prompt, and where it was tried.
#[derive(Debug)]
struct RowOutcome {
    result: RowResult,
    attempts: Vec<Attempt>,
}

impl VllmSampler {
    /// Checks that every endpoint is up and reads the context it serves. `tokenizer` is the
    /// trained model's: prompts are encoded and generations decoded with it.
    pub fn connect(
        endpoints: &[String],
        cfg: &VllmConfig,
        adapter_root: &Path,
        tokenizer: Tokenizer,
    ) -> Result<Self> {
        check_endpoints(endpoints)?;
        cfg.validate()?;
        let timeout = Duration::from_secs_f64(cfg.timeout_s);
        let mut list = Vec::with_capacity(endpoints.len());
        let mut context = usize::MAX;
        for url in endpoints {
            let client = Client::new(url, timeout, cfg.concurrency);
            context = context.min(served_context(&client)?);
            list.push(Endpoint {
                client,
                failed_calls: AtomicU32::new(0),
            });
        }
        let adapter_root =
            std::path::absolute(adapter_root).map_err(|e| TrainError::io(adapter_root, e))?;
        Ok(Self {
            endpoints: list,
            tokenizer,
            cfg: cfg.clone(),
            adapter_root,
            context,
            served: None,
        })
    }

    /// The smallest context (`--max-model-len`) of the servers.
    pub fn context(&self) -> usize {
        self.context
    }

    /// The adapter version every endpoint serves, once one was loaded.
    pub fn served(&self) -> Option<usize> {
        self.served
    }

    /// Where version `version` of the adapter is written.
    pub fn adapter_path(&self, version: usize) -> PathBuf {
        self.adapter_root.join(format!("v{version}"))
    }

    /// Makes every endpoint serve `policy`'s adapter as version `version` (nothing to do when
    /// it already does): writes it atomically, loads it in place, checks that each endpoint
    /// lists that directory, and removes versions older than the one served before.
    pub fn serve(&mut self, policy: &Policy, version: usize) -> Result<()> {
        if self.served == Some(version) {
            return Ok(());
        }
        if policy.lora_config().is_none() {
            return Err(TrainError::config(
                "model.finetune",
                "the vllm backend follows training through a LoRA adapter; the policy has none",
            ));
        }
        std::fs::create_dir_all(&self.adapter_root)
            .map_err(|e| TrainError::io(&self.adapter_root, e))?;
        let dir = self.adapter_path(version);
        policy.save(&dir, SaveMode::AdapterOnly)?;
        let path = dir
            .to_str()
            .ok_or_else(|| {
                TrainError::io(&dir, "the path is not UTF-8; servers cannot be told it")
            })?
            .to_string();
        for ep in &self.endpoints {
            self.load_on(ep, &path)?;
        }
        let previous = self.served.replace(version);
        self.prune(version, previous)
    }

    /// Loads the adapter at `path` on one endpoint and checks that it serves it.
    fn load_on(&self, ep: &Endpoint, path: &str) -> Result<()> {
        let name = &self.cfg.lora_name;
        let failed = |message: String| TrainError::Endpoint {
            endpoint: ep.client.url.clone(),
            message,
        };
        self.with_retries(|| ep.client.load_adapter(name, path))
            .map_err(|e| {
                let hint = match &e {
                    CallError::Status { code: 404 | 405, .. } => "; run the server with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True",
                    _ => "",
                };
                failed(format!("loading the adapter {path}: {e}{hint}"))
            })?;
        let cards = self
            .with_retries(|| ep.client.models())
            .map_err(|e| failed(format!("listing models: {e}")))?;
        let card = cards
            .iter()
            .find(|c| &c.id == name)
            .ok_or_else(|| failed(format!("does not list the adapter {name} after loading it")))?;
        if card.root.as_deref() != Some(path) {
            return Err(failed(format!(
                "serves the adapter {name} from {:?}, expected {path}",
                card.root
            )));
        }
        Ok(())
    }

    /// Removes adapter versions other than `current` and `previous`.
    fn prune(&self, current: usize, previous: Option<usize>) -> Result<()> {
        let root = &self.adapter_root;
        let entries = std::fs::read_dir(root).map_err(|e| TrainError::io(root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| TrainError::io(root, e))?;
            let name = entry.file_name();
            let version = name
                .to_str()
                .and_then(|n| n.strip_prefix('v'))
                .and_then(|n| n.parse::<usize>().ok());
            let Some(v) = version else { continue };
            if v != current && Some(v) != previous {
                let p = entry.path();
                std::fs::remove_dir_all(&p).map_err(|e| TrainError::io(&p, e))?;
            }
        }
        Ok(())
    }

    /// Calls `f` until it succeeds, fails with an error not worth retrying, or the retries
    /// are spent.
    fn with_retries<T>(
        &self,
        mut f: impl FnMut() -> std::result::Result<T, CallError>,
    ) -> std::result::Result<T, CallError> {
        let mut k = 0;
        loop {
            match f() {
                Err(e) if e.retryable() && k < self.cfg.retries => {
                    std::thread::sleep(self.retry_wait(k));
                    k += 1;
                }
                other => return other,
            }
        }
    }

    /// The wait before retry `k + 1`.
    fn retry_wait(&self, k: u32) -> Duration {
        Duration::from_secs_f64(self.cfg.retry_wait_s * 2f64.powi(k.min(16) as i32))
    }

    /// Samples every prompt, `concurrency` requests per endpoint at a time.
    fn run_rows(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        seed: u64,
    ) -> Vec<RowOutcome> {
        let n = prompts.len();
        let workers = n.min(self.cfg.concurrency * self.endpoints.len()).max(1);
        let next = AtomicUsize::new(0);
        let mut slots: Vec<Option<RowOutcome>> = (0..n).map(|_| None).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= n {
                                return done;
                            }
                            done.push((i, self.row(i, &prompts[i], params, seed)));
                        }
                    })
                })
                .collect();
            for h in handles {
                for (i, outcome) in h.join().unwrap_or_default() {
                    slots[i] = Some(outcome);
                }
            }
        });
        slots
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| RowOutcome {
                    result: Err(RowFault("the sampling thread of this row failed".into())),
                    attempts: Vec::new(),
                })
            })
            .collect()
    }

    /// Samples prompt `i`, trying the endpoints in turn.
    fn row(&self, i: usize, prompt: &[u32], params: &SamplingParams, seed: u64) -> RowOutcome {
        let top_k = (params.top_k > 0).then_some(params.top_k);
        let req = CompletionRequest {
            model: &self.cfg.lora_name,
            prompt,
            max_tokens: params
                .max_new_tokens
                .min(self.context.saturating_sub(prompt.len())),
            temperature: params.temperature,
            top_p: params.top_p,
            top_k,
            seed: row_seed(seed, i) >> 1,
            logprobs: 1,
            return_token_ids: true,
            stop_token_ids: self.tokenizer.eos_ids(),
            stop: &params.stop_strings,
            include_stop_str_in_output: true,
        };
        let mut attempts = Vec::new();
        for k in 0..=self.cfg.retries {
            if k > 0 {
                std::thread::sleep(self.retry_wait(k - 1));
            }
            let e = (i + k as usize) % self.endpoints.len();
            let client = &self.endpoints[e].client;
            let result = client
                .complete(&req)
                .and_then(|c| generation(c, &self.tokenizer));
            match result {
                Ok(g) => {
                    attempts.push(Attempt {
                        endpoint: e,
                        error: None,
                    });
                    return RowOutcome {
                        result: Ok(g),
                        attempts,
                    };
                }
                Err(err) => {
                    let retry = err.retryable();
                    attempts.push(Attempt {
                        endpoint: e,
                        error: Some(format!("{}: {err}", client.url)),
                    });
                    if !retry {
                        break;
                    }
                }
            }
        }
        let last = attempts
            .last()
            .and_then(|a| a.error.clone())
            .unwrap_or_default();
        RowOutcome {
            result: Err(RowFault(last)),
            attempts,
        }
    }

    /// Counts, per endpoint, the calls in which it answered nothing; errors when one reached
    /// `max_failed_calls`.
    fn tally(&self, rows: &[RowOutcome]) -> Result<()> {
        for (e, ep) in self.endpoints.iter().enumerate() {
            let tries: Vec<&Attempt> = rows
                .iter()
                .flat_map(|r| &r.attempts)
                .filter(|a| a.endpoint == e)
                .collect();
            if tries.iter().any(|a| a.error.is_none()) {
                ep.failed_calls.store(0, Ordering::Relaxed);
                continue;
            }
            let Some(last) = tries.last().and_then(|a| a.error.clone()) else {
                continue;
            };
            let n = ep.failed_calls.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= self.cfg.max_failed_calls {
                return Err(TrainError::Endpoint {
                    endpoint: ep.client.url.clone(),
                    message: format!(
                        "answered no request in {n} sampling calls in a row (rollout.vllm.max_failed_calls); last error: {last}"
                    ),
                });
            }
        }
        Ok(())
    }
}

impl Sampler for VllmSampler {
    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn generate(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        seed: u64,
    ) -> Result<Vec<RowResult>> {
        params.validate()?;
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(TrainError::config(
                "prompts",
                format!("prompt {i} is empty"),
            ));
        }
        let rows = self.run_rows(prompts, params, seed);
        self.tally(&rows)?;
        Ok(rows.into_iter().map(|r| r.result).collect())
    }

    fn fits(&self, style: &PromptStyle, needed: usize, turns: usize) -> Result<()> {
        context::fits_served(style, self.context, needed, turns)
    }
}

/// Checks that the server at `client` is up and returns the context it serves.
fn served_context(client: &Client) -> Result<usize> {
    let failed = |message: String| TrainError::Endpoint {
        endpoint: client.url.clone(),
        message,
    };
    client.health().map_err(|e| {
        failed(format!(
            "not healthy ({e}); start a vLLM server there (see docs/vllm.md)"
        ))
    })?;
    let cards = client
        .models()
        .map_err(|e| failed(format!("listing models: {e}")))?;
    let base = cards
        .iter()
        .find(|c| c.parent.is_none())
        .ok_or_else(|| failed("/v1/models lists no base model".into()))?;
    base.max_model_len
        .ok_or_else(|| failed(format!("/v1/models gives no max_model_len for {}", base.id)))
}

/// The generation of a choice: its token ids and log-probabilities as the server gave them,
/// the text decoded by the trainer's tokenizer.
fn generation(c: Choice, tok: &Tokenizer) -> std::result::Result<Generation, CallError> {
    let tokens = c.token_ids.ok_or_else(|| {
        CallError::Answer(
            "no token_ids (the server must support return_token_ids; vLLM 0.10.2 or later)".into(),
        )
    })?;
    let logprobs: Vec<f32> = c
        .logprobs
        .ok_or_else(|| CallError::Answer("no logprobs".into()))?
        .token_logprobs
        .into_iter()
        .map(|l| l.ok_or_else(|| CallError::Answer("a token without log-probability".into())))
        .collect::<std::result::Result<_, _>>()?;
    if logprobs.len() != tokens.len() {
        return Err(CallError::Answer(format!(
            "{} log-probabilities for {} tokens",
            logprobs.len(),
            tokens.len()
        )));
    }
    let finish_reason = match (c.finish_reason.as_deref(), c.stop_reason) {
        (Some("length"), _) => FinishReason::Length,
        (Some("stop"), Some(serde_json::Value::String(s))) => FinishReason::Stop(s),
        (Some("stop"), _) => FinishReason::Eos,
        (Some("abort"), _) => {
            return Err(CallError::Transport(
                "the server aborted the request".into(),
            ));
        }
        (other, _) => {
            return Err(CallError::Answer(format!("finish_reason {other:?}")));
        }
    };
    let text = tok
        .decode(&tokens)
        .map_err(|e| CallError::Answer(format!("token ids the tokenizer cannot decode: {e}")))?;
    Ok(Generation {
        tokens,
        logprobs,
        finish_reason,
        text,
    })
}

#[cfg(test)]
mod tests;
