//! The training loop: rollouts → advantages → samples → π_old / π_ref log-probabilities →
//! `ppo_epochs` × mini-batches of the SPEC §3 loss with AdamW → metrics, evaluation,
//! checkpoints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{backprop::GradStore, DType, Tensor};
use gigpo_env::levels::HeldOut;
use gigpo_env::seed::mix_seed;
use gigpo_model::{
    AdamW, AdamWConfig, LogitProcessing, Policy, SamplingParams, ScoreMode, TrainMemory,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{self, TrainState, RNG_DERIVATION};
use crate::config::{OldLogprobs, RolloutBackend, TrainConfig};
use crate::context;
use crate::error::{Result, TrainError};
use crate::eval::{EvalResult, Evaluator};
use crate::fsutil::write_atomic;
use crate::layout::{assign_advantages, build_samples, Sample};
use crate::loss::{policy_loss, LossInputs};
use crate::metrics::{names, MetricsLog, Record};
use crate::rollout::{collect, RolloutPlan};
use crate::rundir;
use crate::sampler::Sampler;
use crate::sft::{demonstrations, fine_tune, write_curve};
use crate::vllm::{VllmSampler, ADAPTER_DIR};

/// Stream constants mixed into the base seed for each kind of randomness.
pub const SAMPLE_STREAM: u64 = 0x7361_6d70_6c65; // "sample"
/// See [`SAMPLE_STREAM`].
pub const SHUFFLE_STREAM: u64 = 0x7368_7566_666c; // "shuffl"

/// The policy a configuration describes, freshly initialised: the tiny model from the seed, or
/// the Hugging Face directory, with a fresh LoRA adapter when configured.
pub fn initial_policy(cfg: &TrainConfig) -> Result<Policy> {
    let device = cfg.model.device.open()?;
    let mut policy = match &cfg.model.path {
        None => Policy::tiny(&cfg.tiny_config()?, cfg.seed, &device)?,
        Some(path) => Policy::load(path, &device, None)?,
    };
    if let Some(lora) = cfg.lora() {
        policy.add_lora(lora)?;
    }
    Ok(policy)
}

/// The sampling parameters of training rollouts.
pub fn train_sampling(cfg: &TrainConfig) -> SamplingParams {
    let r = &cfg.rollout;
    SamplingParams {
        temperature: r.temperature,
        top_p: r.top_p,
        top_k: r.top_k,
        max_new_tokens: cfg.max_new_tokens(),
        stop_strings: Vec::new(),
    }
}

/// The level seeds of training iteration `iteration` (1-based), one per group: the training
/// levels `k = (iteration − 1) · groups + g` (modulo `rollout.train_levels`), each replaced when
/// its level is held out for evaluation.
pub fn train_seeds(cfg: &TrainConfig, held_out: &HeldOut, iteration: usize) -> Result<Vec<u64>> {
    let groups = cfg.rollout.groups;
    let ks = (0..groups).map(|g| {
        let k = ((iteration - 1) * groups + g) as u64;
        cfg.rollout.train_levels.map_or(k, |n| k % n as u64)
    });
    Ok(held_out.train_seeds(&cfg.env, ks)?)
}

/// What a finished (or interrupted) run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Iterations completed.
    pub iterations: usize,
    /// Evaluation before the first update (after the warm start) of this process's part of
    /// the run, if any.
    pub first_eval: Option<EvalResult>,
    /// The last evaluation.
    pub last_eval: Option<EvalResult>,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
    /// Why `curves.png` could not be drawn, if it could not.
    pub plot_error: Option<String>,
}

/// Statistics of one update phase.
#[derive(Debug, Clone, Copy, Default)]
struct UpdateStats {
    loss: f64,
    pg: f64,
    kl: f64,
    entropy: f64,
    clip_fraction: f64,
    grad_norm: f64,
    tokens: f64,
}

/// The log-probabilities of one update phase.
struct PhaseLogprobs {
    /// log π_old per sample.
    old: Vec<Vec<f32>>,
    /// log π_ref per sample, when β > 0.
    reference: Option<Vec<Vec<f32>>>,
    /// Mean |log π at sampling − recomputed log π_old| over trained tokens, when recomputed.
    mismatch: Option<f64>,
}

/// A training run in a run directory.
pub struct Trainer {
    cfg: TrainConfig,
    policy: Policy,
    /// The vLLM servers that sample rollouts, with `rollout.backend = "vllm"`.
    server: Option<VllmSampler>,
    reference: Option<Policy>,
    opt: AdamW,
    evaluator: Evaluator,
    /// Whether the start of the run (warm start, first evaluation) is behind it.
    started: bool,
    done: usize,
    env_steps: u64,
    run_dir: PathBuf,
    log: MetricsLog,
    progress: bool,
}

impl Trainer {
    /// Starts a new run in `cfg.run_dir` (created with its parents if missing). The directory
    /// must not hold the output of an earlier run (any of [`rundir::RUN_FILES`]). Writes the
    /// configuration to `run_dir/config.toml`.
    pub fn new(cfg: TrainConfig) -> Result<Self> {
        let cfg = cfg.resolved()?;
        cfg.validate()?;
        rundir::refuse_earlier_run(&cfg.run_dir)?;
        Self::fresh(cfg)
    }

    /// Like [`Trainer::new`], but first removes the output of an earlier run from the run
    /// directory (exactly [`rundir::RUN_FILES`]; other files stay).
    pub fn new_overwriting(cfg: TrainConfig) -> Result<Self> {
        let cfg = cfg.resolved()?;
        cfg.validate()?;
        rundir::remove_earlier_run(&cfg.run_dir)?;
        Self::fresh(cfg)
    }

    /// Builds everything first, so that a configuration the model or environment rejects
    /// leaves no run directory behind.
    fn fresh(cfg: TrainConfig) -> Result<Self> {
        let run_dir = cfg.run_dir.clone();
        let policy = initial_policy(&cfg)?;
        context::check(&cfg, &policy)?;
        let server = connect_server(&cfg, &policy)?;
        let reference = reference_policy(&cfg, &policy)?;
        let opt = AdamW::new(policy.named_trainable_vars().to_vec(), adamw_config(&cfg))?;
        let evaluator = Evaluator::new(&cfg)?;
        std::fs::create_dir_all(&run_dir).map_err(|e| TrainError::io(&run_dir, e))?;
        write_atomic(&run_dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
        let log = MetricsLog::open(&run_dir, None)?;
        Ok(Self {
            cfg,
            policy,
            server,
            reference,
            opt,
            evaluator,
            started: false,
            done: 0,
            env_steps: 0,
            run_dir,
            log,
            progress: false,
        })
    }

    /// Continues the run in `run_dir` from its newest checkpoint, with the configuration saved
    /// there (`iterations` may be raised by `iterations`). A run stopped before its first
    /// checkpoint starts again from the beginning with the configuration it saved in
    /// `run_dir/config.toml`; its earlier `metrics.jsonl` is kept as
    /// `metrics.before-restart-K.jsonl`. Temporaries that killed writes left in the run
    /// directory and in `checkpoints/` are removed first.
    pub fn resume(run_dir: &Path, iterations: Option<usize>) -> Result<Self> {
        checkpoint::remove_stale_temporaries(run_dir);
        match checkpoint::list(run_dir)?.pop() {
            Some((n, dir)) => Self::resume_from(run_dir, n, &dir, iterations),
            None => Self::restart(run_dir, iterations),
        }
    }

    fn restart(run_dir: &Path, iterations: Option<usize>) -> Result<Self> {
        let saved = run_dir.join("config.toml");
        if !saved.is_file() {
            return Err(TrainError::Checkpoint {
                path: run_dir.join("checkpoints"),
                message: format!(
                    "no checkpoint to resume from, and no {} of a started run",
                    saved.display()
                ),
            });
        }
        let mut cfg = TrainConfig::from_file(&saved)?;
        cfg.run_dir = run_dir.to_path_buf();
        if let Some(n) = iterations {
            cfg.iterations = n;
        }
        cfg.validate()?;
        rundir::keep_earlier_metrics(run_dir)?;
        Self::fresh(cfg)
    }

    fn resume_from(
        run_dir: &Path,
        n: usize,
        dir: &Path,
        iterations: Option<usize>,
    ) -> Result<Self> {
        let mut cfg = TrainConfig::from_file(&dir.join("config.toml"))?;
        cfg.run_dir = run_dir.to_path_buf();
        if let Some(n) = iterations {
            cfg.iterations = n;
        }
        cfg.validate()?;
        let state = checkpoint::read_state(dir)?;
        checkpoint::check_iteration(dir, n, &state, cfg.iterations)?;
        let policy = initial_policy(&cfg)?;
        context::check(&cfg, &policy)?;
        let server = connect_server(&cfg, &policy)?;
        // The reference is the initial policy, so take it before loading trained weights.
        let reference = reference_policy(&cfg, &policy)?;
        checkpoint::load_trainable(dir, &policy)?;
        let mut opt = AdamW::new(policy.named_trainable_vars().to_vec(), adamw_config(&cfg))?;
        opt.load_state(&dir.join("optimizer.safetensors"))?;
        write_atomic(&run_dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
        let evaluator = Evaluator::new(&cfg)?;
        let log = MetricsLog::open(run_dir, Some(state.iteration))?;
        Ok(Self {
            cfg,
            policy,
            server,
            reference,
            opt,
            evaluator,
            started: true,
            done: state.iteration,
            env_steps: state.env_steps,
            run_dir: run_dir.to_path_buf(),
            log,
            progress: false,
        })
    }

    /// Show a progress bar on the terminal.
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The policy being trained.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Iterations completed.
    pub fn iterations_done(&self) -> usize {
        self.done
    }

    /// Runs the remaining iterations, evaluating and checkpointing as configured, and draws
    /// `curves.png` at the end.
    pub fn run(&mut self) -> Result<RunSummary> {
        let total = self.cfg.iterations;
        let bar = progress_bar(self.progress, total as u64, self.done as u64);
        let mut summary = RunSummary {
            iterations: self.done,
            first_eval: None,
            last_eval: None,
            checkpoint: None,
            plot_error: None,
        };
        if !self.started {
            let ev = self.start()?;
            summary.first_eval = ev.clone();
            summary.last_eval = ev;
        }
        while self.done < total && !self.budget_spent() {
            let it = self.done + 1;
            let mut rec = self.iteration(it)?;
            self.done = it;
            let last = it == total || self.budget_spent();
            let every = self.cfg.eval.every;
            if every > 0 && (it % every == 0 || last) {
                let start = Instant::now();
                let ev = self.evaluate()?;
                ev.insert_into(&mut rec);
                rec.insert(names::TIME_EVAL.into(), start.elapsed().as_secs_f64());
                summary.last_eval = Some(ev);
            }
            self.log.write(&rec)?;
            let ck = self.cfg.checkpoint.every;
            if last || (ck > 0 && it % ck == 0) {
                summary.checkpoint = Some(self.save_checkpoint()?);
            }
            summary.iterations = it;
            if let Some(b) = &bar {
                b.set_position(it as u64);
                b.set_message(bar_message(&rec));
            }
        }
        if let Some(b) = bar {
            b.finish();
        }
        let curves = self.run_dir.join("curves.png");
        summary.plot_error = crate::plot::plot_runs(std::slice::from_ref(&self.run_dir), &curves)
            .err()
            .map(|e| e.to_string());
        Ok(summary)
    }

    /// The start of a fresh run: the warm start (then checkpoint `iter-0`) and the first
    /// evaluation, logged as iteration 0.
    fn start(&mut self) -> Result<Option<EvalResult>> {
        let mut rec = Record::new();
        rec.insert(names::ITERATION.into(), 0.0);
        rec.insert(names::ENV_STEPS.into(), 0.0);
        if self.cfg.sft_levels() > 0 {
            let demos = demonstrations(
                &self.cfg,
                self.policy.tokenizer(),
                self.evaluator.held_out(),
            )?;
            let s = fine_tune(&self.policy, &self.cfg, &demos, self.progress)?;
            rec.insert(names::SFT_DEMONSTRATIONS.into(), s.demonstrations as f64);
            rec.insert(names::SFT_FIRST_LOSS.into(), s.first_loss);
            rec.insert(names::SFT_LAST_LOSS.into(), s.last_loss);
            rec.insert(names::TIME_SFT.into(), s.seconds);
            write_curve(&self.run_dir, &s.curve)?;
            // The reference of full fine-tuning is the warm-started policy.
            self.reference = reference_policy(&self.cfg, &self.policy)?;
        }
        let ev = if self.cfg.eval.every > 0 {
            let start = Instant::now();
            let ev = self.evaluate()?;
            ev.insert_into(&mut rec);
            rec.insert(names::TIME_EVAL.into(), start.elapsed().as_secs_f64());
            Some(ev)
        } else {
            None
        };
        if rec.len() > 2 {
            self.log.write(&rec)?;
        }
        if self.cfg.sft_levels() > 0 {
            self.save_checkpoint()?;
        }
        self.started = true;
        Ok(ev)
    }

    /// Whether `env_step_budget` is reached.
    fn budget_spent(&self) -> bool {
        self.cfg
            .env_step_budget
            .is_some_and(|b| self.env_steps >= b)
    }

    /// Evaluates the current policy on the configured held-out levels (on the servers with
    /// the vLLM backend, after making them serve the current adapter).
    pub fn evaluate(&mut self) -> Result<EvalResult> {
        self.serve(self.done)?;
        self.evaluator.evaluate(self.sampler(), &self.cfg)
    }

    /// What samples rollouts and evaluations: the vLLM servers, or the policy itself.
    fn sampler(&self) -> &dyn Sampler {
        match &self.server {
            Some(s) => s,
            None => &self.policy,
        }
    }

    /// Makes the vLLM servers serve the current adapter as version `version` (nothing to do
    /// without servers, or when they serve it already). Returns the seconds it took.
    fn serve(&mut self, version: usize) -> Result<f64> {
        let start = Instant::now();
        if let Some(server) = &mut self.server {
            server.serve(&self.policy, version)?;
        }
        Ok(start.elapsed().as_secs_f64())
    }

    /// Writes a checkpoint of the current state.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let state = TrainState {
            iteration: self.done,
            env_steps: self.env_steps,
            seed: self.cfg.seed,
            rng: RNG_DERIVATION.into(),
        };
        checkpoint::save(
            &self.run_dir,
            &self.cfg,
            &self.policy,
            &self.opt,
            &state,
            self.cfg.checkpoint.keep,
        )
    }

    /// One iteration: rollout, advantages, update. Returns its metrics.
    fn iteration(&mut self, it: usize) -> Result<Record> {
        self.serve(it - 1)?;
        let cfg = &self.cfg;
        let seeds = train_seeds(cfg, self.evaluator.held_out(), it)?;
        let sampling = train_sampling(cfg);
        let plan = RolloutPlan {
            env: &cfg.env,
            seeds: &seeds,
            group_size: cfg.rollout.num_generations,
            max_steps: cfg.rollout.max_steps,
            prompt: cfg.prompt_style(),
            sampling: &sampling,
            sample_seed: mix_seed(cfg.seed ^ SAMPLE_STREAM, it as u64),
        };
        let mut rollout = collect(self.sampler(), &plan)?;
        let stats = rollout.stats();
        let steps: usize = rollout.trajectories.iter().map(|t| t.steps.len()).sum();
        let faulted = rollout
            .trajectories
            .iter()
            .flat_map(|t| &t.steps)
            .filter(|s| s.fault.is_some())
            .count();
        self.env_steps += steps as u64;

        let t_adv = Instant::now();
        let adv = assign_advantages(&mut rollout, &cfg.algorithm)?;
        let values: Vec<f64> = adv.steps.iter().map(|s| s.advantage).collect();
        let samples = build_samples(&rollout, cfg.sample_layout)?;
        let adv_seconds = t_adv.elapsed().as_secs_f64();

        let t_update = Instant::now();
        let lp = self.phase_logprobs(&samples)?;
        let up = self.update(&samples, &lp, it)?;
        let update_seconds = t_update.elapsed().as_secs_f64();
        let sync_seconds = self.serve(it)?;

        let d = &adv.diagnostics;
        let tokens = (rollout.generated_tokens + rollout.prompt_tokens) as f64;
        let mut rec = Record::new();
        let mut put = |k: &str, v: f64| {
            rec.insert(k.to_string(), v);
        };
        put(names::ITERATION, it as f64);
        put(names::ENV_STEPS, self.env_steps as f64);
        put(names::TRAIN_SUCCESS, stats.success_rate);
        put(names::TRAIN_RETURN, stats.mean_return);
        put(names::TRAIN_LENGTH, stats.episode_length);
        put(names::TRAIN_INVALID, stats.invalid_action_rate);
        put(names::ADV_STEP_GROUPS, d.step_groups as f64);
        put(names::ADV_STEP_GROUP_SHARE, d.step_group_share);
        put(names::ADV_ZERO_VAR_SHARE, d.zero_variance_step_group_share);
        put(
            names::ADV_ZERO_VAR_EPISODE_SHARE,
            d.zero_variance_episode_group_share,
        );
        put(
            names::ADV_MEAN_ABS,
            values.iter().map(|v| v.abs()).sum::<f64>() / values.len().max(1) as f64,
        );
        put(names::LOSS_TOTAL, up.loss);
        put(names::LOSS_PG, up.pg);
        put(names::LOSS_KL, up.kl);
        put(names::LOSS_ENTROPY, up.entropy);
        put(names::LOSS_CLIP_FRACTION, up.clip_fraction);
        put(names::GRAD_NORM, up.grad_norm);
        put(names::TIME_ROLLOUT, rollout.seconds);
        put(names::TIME_ADVANTAGE, adv_seconds);
        put(names::TIME_UPDATE, update_seconds);
        put(
            names::TOKENS_PER_S,
            (tokens + up.tokens) / (rollout.seconds + update_seconds).max(1e-9),
        );
        put(
            names::ROLLOUT_TOKENS_PER_S,
            rollout.generated_tokens as f64 / rollout.seconds.max(1e-9),
        );
        put(names::ENV_FAULTS, rollout.faults as f64);
        put(names::SAMPLER_FAULTS, rollout.sampler_faults as f64);
        if self.server.is_some() {
            put(names::TIME_WEIGHT_SYNC, sync_seconds);
        }
        put(names::TRAIN_FAULTED_STEPS, faulted as f64);
        if let Some(m) = lp.mismatch {
            put(names::LOGPROB_MISMATCH, m);
        }
        Ok(rec)
    }

    /// log π_old (recomputed by scoring without gradient, or the behaviour log-probabilities
    /// recorded while sampling), log π_ref when β > 0, and the sampler mismatch.
    fn phase_logprobs(&self, samples: &[Sample]) -> Result<PhaseLogprobs> {
        let mb = self.cfg.micro_batch_size();
        let behaviour = || samples.iter().map(|s| s.behaviour.clone()).collect();
        let (old, mismatch) = match self.cfg.old_logprobs() {
            OldLogprobs::Sampling => (behaviour(), None),
            OldLogprobs::Recompute => {
                let old = score_rows(
                    &self.policy,
                    samples,
                    (ScoreMode::OLD, &self.behaviour()),
                    mb,
                )?;
                let m = mismatch(samples, &old);
                (old, Some(m))
            }
        };
        let reference = if self.cfg.beta() == 0.0 {
            None
        } else {
            let behaviour = self.behaviour();
            Some(match &self.reference {
                Some(r) => score_rows(r, samples, (ScoreMode::OLD, &behaviour), mb)?,
                None => score_rows(
                    &self.policy,
                    samples,
                    (ScoreMode::REFERENCE, &behaviour),
                    mb,
                )?,
            })
        };
        Ok(PhaseLogprobs {
            old,
            reference,
            mismatch,
        })
    }

    /// The behaviour policy's processing of the logits (SPEC §3): temperature, top-k and top-p
    /// of the training rollouts, used in every scoring pass.
    fn behaviour(&self) -> LogitProcessing {
        LogitProcessing::from_sampling(&train_sampling(&self.cfg))
    }

    fn update(&mut self, samples: &[Sample], lp: &PhaseLogprobs, it: usize) -> Result<UpdateStats> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(mix_seed(self.cfg.seed ^ SHUFFLE_STREAM, it as u64));
        let mut order: Vec<usize> = (0..samples.len()).collect();
        let mb = match self.cfg.update.mini_batch_size {
            0 => samples.len().max(1),
            n => n,
        };
        let mut total = UpdateStats::default();
        let mut steps = 0usize;
        for _ in 0..self.cfg.update.ppo_epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(mb) {
                let s = self.mini_batch(samples, lp, chunk)?;
                total.loss += s.loss;
                total.pg += s.pg;
                total.kl += s.kl;
                total.entropy += s.entropy;
                total.clip_fraction += s.clip_fraction;
                total.grad_norm += s.grad_norm;
                total.tokens += s.tokens;
                steps += 1;
            }
        }
        let n = steps.max(1) as f64;
        Ok(UpdateStats {
            loss: total.loss / n,
            pg: total.pg / n,
            kl: total.kl / n,
            entropy: total.entropy / n,
            clip_fraction: total.clip_fraction / n,
            grad_norm: total.grad_norm / n,
            tokens: total.tokens,
        })
    }

    /// One optimizer step over the samples `idx`, in micro-batches whose gradients are summed.
    fn mini_batch(
        &mut self,
        samples: &[Sample],
        lp: &PhaseLogprobs,
        idx: &[usize],
    ) -> Result<UpdateStats> {
        let how = self.cfg.loss.aggregation;
        let denominator = match how {
            crate::config::Aggregation::TokenMean => idx
                .iter()
                .map(|&i| samples[i].mask.iter().sum::<f32>() as f64)
                .sum(),
            _ => idx
                .iter()
                .filter(|&&i| samples[i].mask.iter().any(|&m| m > 0.0))
                .count() as f64,
        };
        let vars = self.policy.trainable_vars();
        let mut grads: Option<GradStore> = None;
        let mut out = UpdateStats::default();
        let mut clipped = 0.0;
        let loss_cfg = self.cfg.loss_config();
        for micro in idx.chunks(self.cfg.micro_batch_size()) {
            let reference = lp.reference.as_deref();
            let batch = Padded::new(samples, &lp.old, reference, micro, self.policy.device())?;
            let seqs: Vec<Vec<u32>> = micro.iter().map(|&i| samples[i].tokens.clone()).collect();
            let starts: Vec<usize> = micro.iter().map(|&i| samples[i].start).collect();
            // Layer activations are recomputed in the backward step and the graph is dropped
            // after it, so a micro-batch holds one layer's activations at a time.
            let memory = TrainMemory {
                recompute: self.cfg.recompute_activations(),
            };
            let pass = self
                .policy
                .train_pass(&seqs, &starts, &self.behaviour(), memory)?;
            let scores = pass.scores();
            let inputs = LossInputs {
                logprobs: &scores.logprobs,
                old_logprobs: &batch.old,
                ref_logprobs: batch.reference.as_ref(),
                entropies: &scores.entropies,
                advantages: &batch.advantages,
                mask: &batch.mask,
                denominator: Some(denominator),
            };
            let l = policy_loss(&inputs, &loss_cfg)?;
            let g = pass.backward(&l.loss)?;
            out.loss += l.loss.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64;
            out.pg += l.pg;
            out.kl += l.kl;
            out.entropy += l.entropy;
            out.tokens += l.tokens;
            clipped += l.clip_fraction * l.tokens;
            grads = Some(match grads {
                None => g,
                Some(acc) => add_grads(acc, g, &vars)?,
            });
        }
        if let Some(g) = grads {
            out.grad_norm = self.opt.step(&g)?.grad_norm;
        }
        out.clip_fraction = if out.tokens > 0.0 {
            clipped / out.tokens
        } else {
            0.0
        };
        Ok(out)
    }
}

/// Old/ref log-probabilities, advantages and mask of some samples, right-padded to
/// `[batch, longest scored length]` as [`Policy::score`] pads.
struct Padded {
    old: Tensor,
    reference: Option<Tensor>,
    advantages: Tensor,
    mask: Tensor,
}

impl Padded {
    fn new(
        samples: &[Sample],
        old: &[Vec<f32>],
        reference: Option<&[Vec<f32>]>,
        idx: &[usize],
        device: &candle_core::Device,
    ) -> Result<Self> {
        let width = idx
            .iter()
            .map(|&i| samples[i].scored_len())
            .max()
            .unwrap_or(0);
        let pad = |rows: &mut dyn Iterator<Item = &[f32]>| -> Result<Tensor> {
            let mut flat = Vec::with_capacity(idx.len() * width);
            for r in rows {
                flat.extend_from_slice(&r[..r.len().min(width)]);
                flat.extend(std::iter::repeat_n(0.0, width - r.len().min(width)));
            }
            Ok(Tensor::from_vec(flat, (idx.len(), width), device)?)
        };
        for &i in idx {
            if old[i].len() != samples[i].scored_len() {
                return Err(TrainError::config(
                    "update.old_logprobs",
                    format!(
                        "sample {i}: {} old log-probabilities for {} tokens",
                        old[i].len(),
                        samples[i].scored_len()
                    ),
                ));
            }
        }
        Ok(Self {
            old: pad(&mut idx.iter().map(|&i| old[i].as_slice()))?,
            reference: reference
                .map(|r| pad(&mut idx.iter().map(|&i| r[i].as_slice())))
                .transpose()?,
            advantages: pad(&mut idx.iter().map(|&i| samples[i].advantages.as_slice()))?,
            mask: pad(&mut idx.iter().map(|&i| samples[i].mask.as_slice()))?,
        })
    }
}

/// Per-sample log-probabilities of the scored tokens, in micro-batches, without gradient.
fn score_rows(
    policy: &Policy,
    samples: &[Sample],
    (mode, processing): (ScoreMode, &LogitProcessing),
    micro: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(micro.max(1)) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|s| s.tokens.clone()).collect();
        let starts: Vec<usize> = chunk.iter().map(|s| s.start).collect();
        out.extend(
            policy
                .score_with(&seqs, &starts, mode, processing)?
                .logprob_rows()?,
        );
    }
    Ok(out)
}

/// Adds the gradients of `g` for `vars` into `acc` (gradients of micro-batches).
pub(crate) fn add_grads(
    mut acc: GradStore,
    g: GradStore,
    vars: &[candle_core::Var],
) -> Result<GradStore> {
    for v in vars {
        if let Some(new) = g.get(v.as_tensor()) {
            let sum = match acc.get(v.as_tensor()) {
                Some(old) => (old + new)?,
                None => new.clone(),
            };
            acc.insert(v.as_tensor(), sum);
        }
    }
    Ok(acc)
}

/// Mean |behaviour − recomputed| log-probability over the trained tokens of `samples`.
fn mismatch(samples: &[Sample], recomputed: &[Vec<f32>]) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (s, r) in samples.iter().zip(recomputed) {
        for ((&m, &b), &o) in s.mask.iter().zip(&s.behaviour).zip(r) {
            if m > 0.0 {
                sum += (b as f64 - o as f64).abs();
                n += 1;
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// The vLLM servers of `cfg`, checked to be up and to serve a context that fits the episodes;
/// `None` with the in-process backend.
fn connect_server(cfg: &TrainConfig, policy: &Policy) -> Result<Option<VllmSampler>> {
    if cfg.rollout.backend != RolloutBackend::Vllm {
        return Ok(None);
    }
    let v = &cfg.rollout.vllm;
    let root = v
        .adapter_dir
        .clone()
        .unwrap_or_else(|| cfg.run_dir.join(ADAPTER_DIR));
    let server =
        VllmSampler::connect(&cfg.rollout.endpoints, v, &root, policy.tokenizer().clone())?;
    context::check(cfg, &server)?;
    Ok(Some(server))
}

fn reference_policy(cfg: &TrainConfig, policy: &Policy) -> Result<Option<Policy>> {
    if cfg.beta() == 0.0 || policy.lora_config().is_some() {
        return Ok(None);
    }
    Ok(Some(policy.frozen_copy()?))
}

pub(crate) fn adamw_config(cfg: &TrainConfig) -> AdamWConfig {
    let o = &cfg.optim;
    AdamWConfig {
        lr: cfg.lr(),
        beta1: o.beta1,
        beta2: o.beta2,
        eps: o.eps,
        weight_decay: o.weight_decay,
        max_grad_norm: o.max_grad_norm,
    }
}

fn progress_bar(on: bool, total: u64, done: u64) -> Option<indicatif::ProgressBar> {
    if !on {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} iters  {per_sec}  ETA {eta}  {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_position(done);
    Some(bar)
}

fn bar_message(rec: &Record) -> String {
    let g = |k: &str| rec.get(k).copied().unwrap_or(f64::NAN);
    let mut s = format!(
        "success {:.2}  return {:.2}  invalid {:.2}",
        g(names::TRAIN_SUCCESS),
        g(names::TRAIN_RETURN),
        g(names::TRAIN_INVALID)
    );
    if let Some(e) = rec.get(names::EVAL_SUCCESS) {
        s.push_str(&format!("  eval {e:.2}"));
    }
    s
}
