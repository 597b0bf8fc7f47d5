//! Warm start: supervised fine-tuning on the optimal solver's demonstrations before RL.
//!
//! Users rarely start RL from a model that has never seen the task: they fine-tune on
//! demonstrations first. For the built-in Sokoban the demonstrations come from the
//! breadth-first solver on training levels (never on a held-out level): every state on a
//! shortest solution, as the step prompt the rollout would show, with the solver's move as the
//! answer. The loss is the mean negative log-likelihood of the answer tokens.
//!
//! ```toml
//! [sft]
//! levels = 4000      # solved training levels (0 = no warm start)
//! epochs = 2
//! ```

use std::time::Instant;

use candle_core::DType;
use gigpo_env::action::{ActionFormat, Direction};
use gigpo_env::levels::HeldOut;
use gigpo_env::sokoban::{solve, Sokoban};
use gigpo_env::spec::EnvSpec;
use gigpo_env::Environment;
use gigpo_model::{AdamW, AdamWConfig, Policy, ScoreMode, Tokenizer};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::rollout::{next_prompt, PastTurn};

/// Training level indices of the demonstrations start here, far from those of RL iterations.
const SFT_LEVEL_OFFSET: u64 = 1 << 40;
/// Levels of the warm start of the `scratch` profile on the built-in Sokoban.
pub const SCRATCH_SFT_LEVELS: usize = 12_000;
/// Stream of the demonstration shuffle.
const SFT_SHUFFLE_STREAM: u64 = 0x7366_7473_6866; // "sftshf"

/// The warm start (`[sft]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    /// Training levels solved for demonstrations; 0 = no warm start. Default by profile:
    /// [`SCRATCH_SFT_LEVELS`] for the tiny model trained from scratch on the built-in Sokoban
    /// (the default run), 0 otherwise (`TrainConfig::sft_levels`).
    pub levels: Option<usize>,
    /// Passes over the demonstrations. Default 2.
    pub epochs: usize,
    /// Demonstrations per optimizer step. Default 64.
    pub batch_size: usize,
    /// Learning rate of the warm start (AdamW, the run's other optimizer settings). Default 1e-3
    /// (at 3e-3 the tiny model can stay longer on its plateau of uniform moves).
    pub lr: f64,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            levels: None,
            epochs: 2,
            batch_size: 64,
            lr: 1e-3,
        }
    }
}

impl SftConfig {
    /// Checks ranges, naming the field; `levels` is the resolved number of levels.
    pub fn validate(&self, levels: usize) -> Result<()> {
        if levels > 0 && (self.epochs == 0 || self.batch_size == 0) {
            return Err(TrainError::config(
                "sft.epochs / sft.batch_size",
                "must be at least 1 when sft.levels is set",
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(TrainError::config(
                "sft.lr",
                format!("{} must be > 0", self.lr),
            ));
        }
        Ok(())
    }
}

/// One demonstrated step: the prompt and the answer tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Demonstration {
    /// The step prompt, as a rollout builds it.
    pub prompt: Vec<u32>,
    /// The answer: the move, in the environment's action format, with EOS when it fits.
    pub answer: Vec<u32>,
}

/// What a warm start did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SftStats {
    /// Demonstrated steps.
    pub demonstrations: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Mean loss of the first and of the last epoch.
    pub first_loss: f64,
    pub last_loss: f64,
    /// Wall-clock seconds, demonstrations included.
    pub seconds: f64,
}

/// The demonstrations of `cfg.sft.levels` training levels (held-out levels excluded).
pub fn demonstrations(
    cfg: &TrainConfig,
    tok: &Tokenizer,
    held_out: &HeldOut,
) -> Result<Vec<Demonstration>> {
    let EnvSpec::Sokoban(sokoban) = &cfg.env else {
        return Err(TrainError::config(
            "sft.levels",
            "solver demonstrations need the built-in Sokoban environment",
        ));
    };
    let solver_env = Sokoban::new(sokoban.clone())?;
    let mut env = cfg.env.build()?;
    let instructions = cfg.instructions().then(|| env.instructions());
    let mut out = Vec::new();
    for i in 0..cfg.sft_levels() as u64 {
        let seed = held_out.train_seed(env.as_mut(), SFT_LEVEL_OFFSET + i)?;
        let room = solver_env.initial_room(seed)?;
        let path = solve(&room)
            .map_err(|e| TrainError::config("sft.levels", format!("level seed {seed}: {e}")))?
            .unwrap_or_default();
        let steps = path.len().min(cfg.rollout.max_steps);
        demonstrate(
            cfg,
            tok,
            env.as_mut(),
            instructions.as_deref(),
            seed,
            &path[..steps],
            &mut out,
        )?;
    }
    Ok(out)
}

/// Plays `path` from the level of `seed`, recording each state's prompt and move.
fn demonstrate(
    cfg: &TrainConfig,
    tok: &Tokenizer,
    env: &mut dyn Environment,
    instructions: Option<&str>,
    seed: u64,
    path: &[Direction],
    out: &mut Vec<Demonstration>,
) -> Result<()> {
    let mut obs = env.reset(seed)?;
    // (user message, answer ids, observation, move) of the turns so far.
    let mut past: Vec<(String, Vec<u32>, String, &str)> = Vec::new();
    for &dir in path {
        let turns: Vec<PastTurn<'_>> = past
            .iter()
            .map(|(u, r, o, a)| PastTurn {
                user: u,
                response: r,
                observation: o,
                action_text: a,
            })
            .collect();
        let (user, prompt) = next_prompt(tok, &cfg.prompt_style(), instructions, &turns, &obs)?;
        let answer = answer_tokens(cfg, tok, dir)?;
        out.push(Demonstration {
            prompt,
            answer: answer.clone(),
        });
        let step = env.step(&format!("<action>{dir}</action>"))?;
        past.push((user, answer, std::mem::take(&mut obs.text), dir.as_str()));
        if step.done() {
            break;
        }
        obs = step.observation;
    }
    Ok(())
}

/// The answer to train on: the bare word where the environment accepts it, else the tagged
/// form; followed by EOS when `max_new_tokens` leaves room for it.
fn answer_tokens(cfg: &TrainConfig, tok: &Tokenizer, dir: Direction) -> Result<Vec<u32>> {
    let bare = match &cfg.env {
        EnvSpec::Sokoban(c) => c.action_format == ActionFormat::TaggedOrBare,
        _ => false,
    };
    let text = if bare {
        dir.as_str().to_string()
    } else {
        format!("<action>{dir}</action>")
    };
    let mut ids = tok.encode(&text)?;
    if ids.len() > cfg.max_new_tokens() {
        return Err(TrainError::config(
            "rollout.max_new_tokens",
            format!(
                "{} tokens cannot hold the demonstrated answer {text:?} ({} tokens)",
                cfg.max_new_tokens(),
                ids.len()
            ),
        ));
    }
    if ids.len() < cfg.max_new_tokens() {
        if let Some(&eos) = tok.eos_ids().first() {
            ids.push(eos);
        }
    }
    Ok(ids)
}

/// Fine-tunes `policy` on `demos` for `cfg.sft.epochs` epochs with a fresh AdamW.
pub fn fine_tune(
    policy: &Policy,
    cfg: &TrainConfig,
    demos: &[Demonstration],
    progress: bool,
) -> Result<SftStats> {
    let start = Instant::now();
    let per_epoch = demos.len().div_ceil(cfg.sft.batch_size.max(1));
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new((per_epoch * cfg.sft.epochs) as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "warm start {bar:30} {pos}/{len} steps  ETA {eta}  {msg}",
        ) {
            b.set_style(style);
        }
        b
    });
    let sft = &cfg.sft;
    let mut opt = AdamW::new(
        policy.named_trainable_vars().to_vec(),
        AdamWConfig {
            lr: sft.lr,
            ..crate::trainer::adamw_config(cfg)
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ SFT_SHUFFLE_STREAM);
    let mut order: Vec<usize> = (0..demos.len()).collect();
    let mut stats = SftStats {
        demonstrations: demos.len(),
        ..SftStats::default()
    };
    for epoch in 0..sft.epochs {
        order.shuffle(&mut rng);
        let mut total = 0.0;
        let mut batches = 0usize;
        for batch in order.chunks(sft.batch_size) {
            total += sft_step(policy, &mut opt, demos, batch, cfg.micro_batch_size())?;
            batches += 1;
            if let Some(b) = &bar {
                b.inc(1);
                b.set_message(format!("loss {:.3}", total / batches as f64));
            }
        }
        let mean = total / batches.max(1) as f64;
        if epoch == 0 {
            stats.first_loss = mean;
        }
        stats.last_loss = mean;
        stats.steps += batches;
    }
    if let Some(b) = bar {
        b.finish();
    }
    stats.seconds = start.elapsed().as_secs_f64();
    Ok(stats)
}

/// One optimizer step on the demonstrations `batch`: mean negative log-likelihood of the
/// answer tokens, gradients summed over micro-batches. Returns the loss.
fn sft_step(
    policy: &Policy,
    opt: &mut AdamW,
    demos: &[Demonstration],
    batch: &[usize],
    micro: usize,
) -> Result<f64> {
    let tokens: usize = batch.iter().map(|&i| demos[i].answer.len()).sum();
    let mut grads: Option<candle_core::backprop::GradStore> = None;
    let mut loss_sum = 0.0;
    for part in batch.chunks(micro.max(1)) {
        let seqs: Vec<Vec<u32>> = part
            .iter()
            .map(|&i| [demos[i].prompt.as_slice(), &demos[i].answer].concat())
            .collect();
        let starts: Vec<usize> = part.iter().map(|&i| demos[i].prompt.len()).collect();
        let scores = policy.score(&seqs, &starts, ScoreMode::TRAIN)?;
        let loss = (scores.logprobs.sum_all()? * (-1.0 / tokens.max(1) as f64))?;
        loss_sum += loss.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64;
        let g = loss.backward()?;
        grads = Some(match grads {
            None => g,
            Some(acc) => crate::trainer::add_grads(acc, g, &policy.trainable_vars())?,
        });
    }
    if let Some(g) = grads {
        opt.step(&g)?;
    }
    Ok(loss_sum)
}
