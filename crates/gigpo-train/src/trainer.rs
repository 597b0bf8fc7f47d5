//! The training loop: rollouts → advantages → samples → π_old / π_ref log-probabilities →
//! `ppo_epochs` × mini-batches of the loss (docs/training.md) with AdamW → metrics,
//! evaluation, checkpoints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use gigpo_env::levels::HeldOut;
use gigpo_env::seed::mix_seed;
use gigpo_model::{AdamW, Policy};

use crate::checkpoint::{self, TrainState, RNG_DERIVATION};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::eval::{EvalResult, Evaluator};
use crate::fsutil::write_atomic;
use crate::metrics::{names, MetricsLog, Record};
use crate::policy::{check_context, initial_policy, reference_policy};
use crate::report::{bar_message, progress_bar, IterationReport};
use crate::rollout::{collect, Rollout, RolloutBackend, RolloutPlan};
use crate::rundir;
use crate::sampler::Sampler;
use crate::sft::{demonstrations, fine_tune, write_curve};
use crate::update::{score_samples, update};
use crate::vllm::{VllmSampler, ADAPTER_DIR};

/// Stream constant of the rollout sampling seed, mixed into the base seed.
pub const SAMPLE_STREAM: u64 = 0x7361_6d70_6c65; // "sample"

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

/// Collects the training rollout of iteration `iteration` (1-based) with `sampler`: one episode
/// group per level of [`train_seeds`], `rollout.num_generations` episodes each, sampled with
/// the rollout's sampling parameters and a seed drawn from the base seed and the iteration.
pub fn collect_iteration(
    cfg: &TrainConfig,
    sampler: &dyn Sampler,
    held_out: &HeldOut,
    iteration: usize,
) -> Result<Rollout> {
    let seeds = train_seeds(cfg, held_out, iteration)?;
    let sampling = cfg.sampling();
    let plan = RolloutPlan {
        env: &cfg.env,
        seeds: &seeds,
        group_size: cfg.rollout.num_generations,
        max_steps: cfg.rollout.max_steps,
        prompt: cfg.prompt_style(),
        sampling: &sampling,
        sample_seed: mix_seed(cfg.seed ^ SAMPLE_STREAM, iteration as u64),
    };
    collect(sampler, &plan)
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
        let model = Model::new(&cfg, None)?;
        let evaluator = Evaluator::new(cfg.eval_plan())?;
        std::fs::create_dir_all(&run_dir).map_err(|e| TrainError::io(&run_dir, e))?;
        write_atomic(&run_dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
        let log = MetricsLog::open(&run_dir, None)?;
        Ok(Self::assemble(cfg, model, evaluator, log, None))
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
        let cfg = saved_config(&saved, run_dir, iterations)?;
        rundir::keep_earlier_metrics(run_dir)?;
        Self::fresh(cfg)
    }

    fn resume_from(
        run_dir: &Path,
        n: usize,
        dir: &Path,
        iterations: Option<usize>,
    ) -> Result<Self> {
        let cfg = saved_config(&dir.join("config.toml"), run_dir, iterations)?;
        let state = checkpoint::read_state(dir)?;
        checkpoint::check_iteration(dir, n, &state, cfg.iterations)?;
        let model = Model::new(&cfg, Some(dir))?;
        write_atomic(&run_dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
        let evaluator = Evaluator::new(cfg.eval_plan())?;
        let log = MetricsLog::open(run_dir, Some(state.iteration))?;
        Ok(Self::assemble(cfg, model, evaluator, log, Some(&state)))
    }

    /// A trainer at the start of a run, or after the checkpoint whose state is `state`.
    fn assemble(
        cfg: TrainConfig,
        model: Model,
        evaluator: Evaluator,
        log: MetricsLog,
        state: Option<&TrainState>,
    ) -> Self {
        Self {
            run_dir: cfg.run_dir.clone(),
            cfg,
            policy: model.policy,
            server: model.server,
            reference: model.reference,
            opt: model.opt,
            evaluator,
            started: state.is_some(),
            done: state.map_or(0, |s| s.iteration),
            env_steps: state.map_or(0, |s| s.env_steps),
            log,
            progress: false,
        }
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
            let plan = self.cfg.sft_plan();
            let held_out = self.evaluator.held_out();
            let demos = demonstrations(&plan, self.policy.tokenizer(), held_out)?;
            let s = fine_tune(&self.policy, &plan, &demos, self.progress)?;
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
        self.evaluator.evaluate(self.sampler())
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
            &self.cfg.to_toml()?,
            &self.policy,
            &self.opt,
            &state,
            self.cfg.checkpoint.keep,
        )
    }

    /// One iteration: rollout, advantages, update. Returns its metrics.
    fn iteration(&mut self, it: usize) -> Result<Record> {
        self.serve(it - 1)?;
        let held_out = self.evaluator.held_out();
        let mut rollout = collect_iteration(&self.cfg, self.sampler(), held_out, it)?;
        self.env_steps += rollout.steps() as u64;

        let t_adv = Instant::now();
        let advantages = rollout.assign_advantages(&self.cfg.algorithm)?;
        let mut samples = rollout.samples(self.cfg.sample_layout)?;
        let advantage_seconds = t_adv.elapsed().as_secs_f64();

        let t_update = Instant::now();
        let reference = self.reference.as_ref();
        let plan = self.cfg.update_plan();
        let mismatch = score_samples(&mut samples, &self.policy, reference, &plan)?;
        let update_stats = update(&samples, &self.policy, &mut self.opt, &plan, it)?;
        let update_seconds = t_update.elapsed().as_secs_f64();
        let sync_seconds = self.serve(it)?;

        let report = IterationReport {
            iteration: it,
            env_steps: self.env_steps,
            rollout: &rollout,
            advantages: &advantages,
            update: update_stats,
            mismatch,
            advantage_seconds,
            update_seconds,
            sync_seconds: self.server.is_some().then_some(sync_seconds),
        };
        Ok(report.record())
    }
}

/// A run's configuration as saved at `path`, moved to `run_dir`, with `iterations` when given.
fn saved_config(path: &Path, run_dir: &Path, iterations: Option<usize>) -> Result<TrainConfig> {
    let mut cfg = TrainConfig::from_file(path)?;
    cfg.run_dir = run_dir.to_path_buf();
    if let Some(n) = iterations {
        cfg.iterations = n;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The model side of a run: the policy, the servers that sample for it, its reference and its
/// optimizer.
struct Model {
    policy: Policy,
    server: Option<VllmSampler>,
    reference: Option<Policy>,
    opt: AdamW,
}

impl Model {
    /// The model of `cfg`, with the trained weights and optimizer state of the checkpoint
    /// directory `checkpoint` when given.
    fn new(cfg: &TrainConfig, checkpoint: Option<&Path>) -> Result<Self> {
        let policy = initial_policy(cfg)?;
        check_context(cfg, &policy)?;
        let server = connect_server(cfg, &policy)?;
        // The reference is the initial policy, so take it before loading trained weights.
        let reference = reference_policy(cfg, &policy)?;
        if let Some(dir) = checkpoint {
            checkpoint::load_trainable(dir, &policy)?;
        }
        let mut opt = AdamW::new(policy.named_trainable_vars().to_vec(), cfg.adamw())?;
        if let Some(dir) = checkpoint {
            opt.load_state(&dir.join("optimizer.safetensors"))?;
        }
        Ok(Self {
            policy,
            server,
            reference,
            opt,
        })
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
    check_context(cfg, &server)?;
    Ok(Some(server))
}
