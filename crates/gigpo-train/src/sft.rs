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
use gigpo_env::seed::mix_seed;
use gigpo_env::sokoban::{solve, Sokoban};
use gigpo_env::spec::EnvSpec;
use gigpo_env::Environment;
use gigpo_model::{AdamW, AdamWConfig, Policy, ScoreMode, Tokenizer};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checks::{at_most, positive};
use crate::error::{Result, TrainError};
use crate::prompt::PromptStyle;
use crate::prompt::{next_prompt, PastTurn};
use crate::update::add_grads;

/// Training level indices of the demonstrations start here, far from those of RL iterations.
const SFT_LEVEL_OFFSET: u64 = 1 << 40;
/// Levels of the warm start of the `scratch` profile on the built-in Sokoban.
pub const SCRATCH_SFT_LEVELS: usize = 32_000;
/// Stream of the demonstration shuffle.
const SFT_SHUFFLE_STREAM: u64 = 0x7366_7473_6866; // "sftshf"
/// Stream of the random moves of noisy demonstrations.
const SFT_NOISE_STREAM: u64 = 0x7366_746e_6f69; // "sftnoi"
/// The most warm-start levels (`sft.levels`).
pub const MAX_SFT_LEVELS: usize = 1 << 20;
/// Points of the warm start's loss curve (at most).
pub const SFT_CURVE_POINTS: usize = 100;

/// The warm start (`[sft]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    /// Training levels solved for demonstrations; 0 = no warm start. Default by profile:
    /// [`SCRATCH_SFT_LEVELS`] for the tiny model trained from scratch on the built-in Sokoban
    /// (the default run), 0 otherwise (`TrainConfig::sft_levels`).
    pub levels: Option<usize>,
    /// Passes over the demonstrations. Default 1.
    pub epochs: usize,
    /// Demonstrations per optimizer step. Default 64.
    pub batch_size: usize,
    /// Peak learning rate of the warm start (AdamW, the run's other optimizer settings). Default
    /// 1e-3 (at 3e-3 the tiny model can stay longer on its plateau of uniform moves).
    pub lr: f64,
    /// How the learning rate changes over the warm start's steps. Default `cosine`.
    pub schedule: LrSchedule,
    /// Probability that a demonstrated step plays a random move instead of the solver's, so
    /// that states off the shortest solution are demonstrated too (each is still labelled with
    /// the solver's move from it). Default 0.
    pub noise: f64,
}

/// Learning-rate schedule of the warm start (`sft.schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// `sft.lr` throughout.
    Constant,
    /// From `sft.lr` down to 0 along half a cosine over all steps:
    /// lr_k = lr · (1 + cos(π k / K)) / 2 for step k of K.
    #[default]
    Cosine,
}

impl LrSchedule {
    /// The learning rate of step `k` (0-based) of `total`, peak `lr`.
    pub fn lr(self, lr: f64, k: usize, total: usize) -> f64 {
        match self {
            LrSchedule::Constant => lr,
            LrSchedule::Cosine => {
                let x = k as f64 / total.max(1) as f64;
                lr * 0.5 * (1.0 + (std::f64::consts::PI * x).cos())
            }
        }
    }
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            levels: None,
            epochs: 1,
            batch_size: 64,
            lr: 1e-3,
            schedule: LrSchedule::Cosine,
            noise: 0.0,
        }
    }
}

impl SftConfig {
    /// Checks ranges, naming the field; `levels` is the resolved number of levels.
    pub fn validate(&self, levels: usize) -> Result<()> {
        at_most("sft.levels", levels, MAX_SFT_LEVELS)?;
        if levels > 0 && (self.epochs == 0 || self.batch_size == 0) {
            return Err(TrainError::config(
                "sft.epochs / sft.batch_size",
                "must be at least 1 when sft.levels is set",
            ));
        }
        if !(0.0..=1.0).contains(&self.noise) {
            return Err(TrainError::config(
                "sft.noise",
                format!("{} must be in [0, 1]", self.noise),
            ));
        }
        positive("sft.lr", self.lr)
    }
}

/// What the warm start reads of the configuration, with the defaults that depend on the
/// model's profile resolved ([`crate::TrainConfig::sft_plan`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SftPlan {
    /// The `[sft]` section.
    pub sft: SftConfig,
    /// Training levels solved for demonstrations (`sft.levels`).
    pub levels: usize,
    /// The environment (demonstrations need the built-in Sokoban).
    pub env: EnvSpec,
    /// The run's base seed.
    pub seed: u64,
    /// Most steps of an episode (`rollout.max_steps`).
    pub max_steps: usize,
    /// Most tokens of one answer (`rollout.max_new_tokens`).
    pub max_new_tokens: usize,
    /// How prompts are built, as in training.
    pub prompt: PromptStyle,
    /// The run's optimizer settings; the warm start replaces the learning rate by `sft.lr`.
    pub optim: AdamWConfig,
    /// Demonstrations per forward/backward pass (`update.micro_batch_size`).
    pub micro_batch_size: usize,
}

/// One demonstrated step: the prompt and the answer tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Demonstration {
    /// The step prompt, as a rollout builds it.
    pub prompt: Vec<u32>,
    /// The answer: the move, in the environment's action format, with EOS when it fits.
    pub answer: Vec<u32>,
}

/// One point of the warm start's loss curve: the mean loss of the optimizer steps up to `step`
/// since the previous point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SftPoint {
    /// Optimizer steps done (over all epochs).
    pub step: usize,
    /// Demonstrations seen (over all epochs).
    pub demonstrations: usize,
    /// Mean loss since the previous point.
    pub loss: f64,
}

/// What a warm start did.
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// The loss at up to [`SFT_CURVE_POINTS`] evenly spaced optimizer steps.
    pub curve: Vec<SftPoint>,
}

/// The demonstrations of `plan.sft.levels` training levels (held-out levels excluded).
pub fn demonstrations(
    plan: &SftPlan,
    tok: &Tokenizer,
    held_out: &HeldOut,
) -> Result<Vec<Demonstration>> {
    let EnvSpec::Sokoban(sokoban) = &plan.env else {
        return Err(TrainError::config(
            "sft.levels",
            "solver demonstrations need the built-in Sokoban environment",
        ));
    };
    let mut env = Sokoban::new(sokoban.clone())?;
    let instructions = plan.prompt.system_turn(|| env.instructions());
    let mut out = Vec::new();
    for i in 0..plan.levels as u64 {
        let seed = held_out.train_seed(&mut env, SFT_LEVEL_OFFSET + i)?;
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(plan.seed ^ SFT_NOISE_STREAM, i));
        let episode = Episode {
            plan,
            tok,
            instructions: instructions.as_deref(),
            seed,
        };
        episode.demonstrate(&mut env, &mut rng, &mut out)?;
    }
    Ok(out)
}

/// One demonstrated episode: its level and how its prompts are built.
struct Episode<'a> {
    plan: &'a SftPlan,
    tok: &'a Tokenizer,
    instructions: Option<&'a str>,
    seed: u64,
}

impl Episode<'_> {
    /// Plays the level of `self.seed`, recording each state's prompt with the solver's move.
    /// With probability `sft.noise` a step plays a uniformly random move instead, so the
    /// demonstrations also show how to continue from states off the shortest solution; the
    /// episode ends at the step limit, when the level is solved, or when no solution is left.
    fn demonstrate(
        &self,
        env: &mut Sokoban,
        rng: &mut ChaCha8Rng,
        out: &mut Vec<Demonstration>,
    ) -> Result<()> {
        let plan = self.plan;
        let mut obs = env.reset(self.seed)?;
        // (user message, answer ids, observation, move) of the turns so far.
        let mut past: Vec<(String, Vec<u32>, String, Direction)> = Vec::new();
        for _ in 0..plan.max_steps {
            let Some(best) = self.solver_move(env)? else {
                break;
            };
            let turns: Vec<PastTurn<'_>> = past
                .iter()
                .map(|(u, r, o, a)| PastTurn {
                    user: u,
                    response: r,
                    observation: o,
                    action_text: a.as_str(),
                })
                .collect();
            let (user, prompt) =
                next_prompt(self.tok, &plan.prompt, self.instructions, &turns, &obs)?;
            let answer = answer_tokens(plan, self.tok, best)?;
            out.push(Demonstration { prompt, answer });
            let played = if rng.random::<f64>() < plan.sft.noise {
                Direction::ALL[rng.random_range(0..Direction::ALL.len())]
            } else {
                best
            };
            let step = env.step(&format!("<action>{played}</action>"))?;
            let played_answer = answer_tokens(plan, self.tok, played)?;
            past.push((user, played_answer, std::mem::take(&mut obs.text), played));
            if step.done() {
                break;
            }
            obs = step.observation;
        }
        Ok(())
    }

    /// The first move of a shortest solution from the current room; `None` when the room is
    /// solved or can no longer be solved.
    fn solver_move(&self, env: &Sokoban) -> Result<Option<Direction>> {
        let room = env
            .room()
            .ok_or_else(|| TrainError::config("sft.levels", "the environment has no room"))?;
        let path = solve(room).map_err(|e| {
            TrainError::config("sft.levels", format!("level seed {}: {e}", self.seed))
        })?;
        Ok(path.and_then(|p| p.first().copied()))
    }
}

/// The answer to train on: the bare word where the environment accepts it, else the tagged
/// form, without the response prefix (which the prompt holds); followed by EOS when `max_new_tokens` leaves room for it.
fn answer_tokens(plan: &SftPlan, tok: &Tokenizer, dir: Direction) -> Result<Vec<u32>> {
    let bare = match &plan.env {
        EnvSpec::Sokoban(c) => c.action_format == ActionFormat::TaggedOrBare,
        _ => false,
    };
    let text = if bare {
        dir.as_str().to_string()
    } else {
        format!("<action>{dir}</action>")
    };
    let prefix = plan.prompt.response_prefix.as_str();
    let text = text.strip_prefix(prefix).ok_or_else(|| {
        TrainError::config(
            "rollout.response_prefix",
            format!("the demonstrated answer {text:?} does not start with {prefix:?}"),
        )
    })?;
    let mut ids = tok.encode(text)?;
    if ids.len() > plan.max_new_tokens {
        return Err(TrainError::config(
            "rollout.max_new_tokens",
            format!(
                "{} tokens cannot hold the demonstrated answer {text:?} ({} tokens)",
                plan.max_new_tokens,
                ids.len()
            ),
        ));
    }
    if ids.len() < plan.max_new_tokens {
        if let Some(&eos) = tok.eos_ids().first() {
            ids.push(eos);
        }
    }
    Ok(ids)
}

/// Fine-tunes `policy` on `demos` for `plan.sft.epochs` epochs with a fresh AdamW.
pub fn fine_tune(
    policy: &Policy,
    plan: &SftPlan,
    demos: &[Demonstration],
    progress: bool,
) -> Result<SftStats> {
    let start = Instant::now();
    let per_epoch = demos.len().div_ceil(plan.sft.batch_size.max(1));
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new((per_epoch * plan.sft.epochs) as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "warm start {bar:30} {pos}/{len} steps  ETA {eta}  {msg}",
        ) {
            b.set_style(style);
        }
        b
    });
    let sft = &plan.sft;
    let mut opt = AdamW::new(
        policy.named_trainable_vars().to_vec(),
        AdamWConfig {
            lr: sft.lr,
            ..plan.optim.clone()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed ^ SFT_SHUFFLE_STREAM);
    let mut order: Vec<usize> = (0..demos.len()).collect();
    let mut stats = SftStats {
        demonstrations: demos.len(),
        ..SftStats::default()
    };
    let curve_every = (per_epoch * sft.epochs).div_ceil(SFT_CURVE_POINTS).max(1);
    let mut window = (0.0, 0usize);
    for epoch in 0..sft.epochs {
        order.shuffle(&mut rng);
        let mut total = 0.0;
        let mut batches = 0usize;
        for batch in order.chunks(sft.batch_size) {
            let k = stats.steps + batches;
            opt.set_lr(sft.schedule.lr(sft.lr, k, per_epoch * sft.epochs));
            let loss = sft_step(policy, &mut opt, demos, batch, plan.micro_batch_size)?;
            total += loss;
            batches += 1;
            window = (window.0 + loss, window.1 + 1);
            if window.1 == curve_every {
                stats.curve.push(SftPoint {
                    step: stats.steps + batches,
                    demonstrations: (epoch * demos.len() + batches * sft.batch_size)
                        .min((epoch + 1) * demos.len()),
                    loss: window.0 / window.1 as f64,
                });
                window = (0.0, 0);
            }
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

/// File of the warm start's loss curve in the run directory, one JSON [`SftPoint`] per line.
pub const SFT_CURVE_FILE: &str = "warm_start.jsonl";

/// Writes the warm start's loss curve to [`SFT_CURVE_FILE`] in `run_dir`.
pub fn write_curve(run_dir: &std::path::Path, curve: &[SftPoint]) -> Result<()> {
    let path = run_dir.join(SFT_CURVE_FILE);
    let mut text = String::new();
    for p in curve {
        let line = serde_json::to_string(p).map_err(|e| TrainError::io(&path, e))?;
        text.push_str(&line);
        text.push('\n');
    }
    crate::fsutil::write_atomic(&path, text.as_bytes())
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
            Some(acc) => add_grads(acc, g, &policy.trainable_vars())?,
        });
    }
    if let Some(g) = grads {
        opt.step(&g)?;
    }
    Ok(loss_sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;
    use gigpo_env::sokoban::solution_length;

    #[test]
    fn cosine_schedule_falls_from_the_peak_to_zero() {
        let c = LrSchedule::Cosine;
        assert_eq!(c.lr(1e-3, 0, 100), 1e-3);
        assert!((c.lr(1e-3, 50, 100) - 5e-4).abs() < 1e-12);
        assert!(c.lr(1e-3, 99, 100) < 1e-6);
        assert!(c.lr(1e-3, 30, 100) > c.lr(1e-3, 31, 100));
        assert_eq!(LrSchedule::Constant.lr(1e-3, 99, 100), 1e-3);
    }

    fn held_out(cfg: &TrainConfig) -> HeldOut {
        HeldOut::new(&cfg.env, gigpo_env::seed::SeedSplit::new(cfg.seed), 8).unwrap()
    }

    fn demos(noise: &str) -> (TrainConfig, Vec<Demonstration>) {
        let mut cfg = TrainConfig::default();
        cfg.set("sft.levels", "30").unwrap();
        cfg.set("sft.noise", noise).unwrap();
        let tok = Tokenizer::tiny().unwrap();
        let held_out = held_out(&cfg);
        let d = demonstrations(&cfg.sft_plan(), &tok, &held_out).unwrap();
        (cfg, d)
    }

    #[test]
    fn without_noise_every_state_of_a_shortest_solution_is_demonstrated() {
        let (cfg, d) = demos("0");
        let EnvSpec::Sokoban(c) = &cfg.env else {
            unreachable!()
        };
        let env = Sokoban::new(c.clone()).unwrap();
        let held_out = held_out(&cfg);
        let mut probe = Sokoban::new(c.clone()).unwrap();
        let mut expected = 0;
        for i in 0..30 {
            let seed = held_out
                .train_seed(&mut probe, SFT_LEVEL_OFFSET + i)
                .unwrap();
            let n = solution_length(&env.initial_room(seed).unwrap())
                .unwrap()
                .unwrap();
            expected += n.min(cfg.rollout.max_steps);
        }
        assert_eq!(d.len(), expected);
    }

    #[test]
    fn noisy_demonstrations_are_seeded_and_visit_more_states() {
        let (_, a) = demos("0.3");
        let (_, b) = demos("0.3");
        let (_, clean) = demos("0");
        assert_eq!(a, b);
        assert!(a.len() > clean.len(), "{} vs {}", a.len(), clean.len());
        let prompts: std::collections::HashSet<&Vec<u32>> = a.iter().map(|d| &d.prompt).collect();
        let clean_prompts: std::collections::HashSet<&Vec<u32>> =
            clean.iter().map(|d| &d.prompt).collect();
        assert!(prompts.difference(&clean_prompts).count() > 0);
    }

    #[test]
    fn noise_outside_zero_to_one_is_refused() {
        let cfg = SftConfig {
            noise: 1.5,
            ..SftConfig::default()
        };
        let e = cfg.validate(10).unwrap_err().to_string();
        assert!(e.contains("sft.noise"), "{e}");
    }
}
