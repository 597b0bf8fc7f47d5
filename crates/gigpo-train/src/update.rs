//! The update phase of an iteration: log π_old and log π_ref of every sample, then
//! `update.ppo_epochs` passes of mini-batch optimizer steps on the loss of [`crate::loss`]
//! (docs/training.md), each mini-batch in micro-batches whose gradients are summed.

use candle_core::{backprop::GradStore, DType, Tensor, Var};
use gigpo_env::seed::mix_seed;
use gigpo_model::{AdamW, AdamWConfig, LogitProcessing, Policy, ScoreMode, TrainMemory};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checks::{at_least_one, positive};
use crate::error::{Result, TrainError};
use crate::loss::{policy_loss, Aggregation, LossConfig, LossInputs, LossOutput};
use crate::samples::Sample;

/// Stream constant of the mini-batch shuffle, mixed into the base seed.
pub const SHUFFLE_STREAM: u64 = 0x7368_7566_666c; // "shuffl"

/// Passes over the collected samples (`[update]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateConfig {
    /// Passes over the samples of one iteration. Default 1.
    pub ppo_epochs: usize,
    /// Samples per mini-batch (one optimizer step each); 0 = the whole batch. Default 64.
    pub mini_batch_size: usize,
    /// Samples per forward/backward pass; gradients of the micro-batches of a mini-batch are
    /// summed before the step (bounds memory, does not change the result). Default by
    /// profile: 64 from scratch, 4 for a pretrained model.
    pub micro_batch_size: Option<usize>,
    /// Where log π_old comes from. Default `recompute` (then `train/logprob_mismatch` watches
    /// the sampler); `sampling` saves a forward pass.
    pub old_logprobs: Option<OldLogprobs>,
    /// Recompute each layer's activations during the backward pass instead of keeping them
    /// (about one more forward pass, a fraction of the memory). Default by profile: on for a
    /// pretrained model, off from scratch.
    pub recompute_activations: Option<bool>,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            ppo_epochs: 1,
            mini_batch_size: 64,
            micro_batch_size: None,
            old_logprobs: None,
            recompute_activations: None,
        }
    }
}

/// The source of log π_old in the ratio ρ (docs/training.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OldLogprobs {
    /// Score every sample with the policy before the first update (no gradient).
    #[default]
    Recompute,
    /// Use the log-probabilities recorded while sampling (the same policy, one forward pass
    /// fewer; `step` layout only, where the context is the sampling prompt).
    Sampling,
}

impl UpdateConfig {
    /// Checks ranges, naming the field; `micro_batch_size` is the resolved one.
    pub fn validate(&self, micro_batch_size: usize) -> Result<()> {
        at_least_one("update.ppo_epochs", self.ppo_epochs)?;
        at_least_one("update.micro_batch_size", micro_batch_size)
    }
}

/// The optimizer of the RL updates (`[optim]`): the model crate's [`AdamWConfig`] (PyTorch's
/// AdamW with global gradient-norm clipping), whose learning rate may be left to
/// `model.profile`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "toml::Table")]
pub struct OptimConfig {
    /// Learning rate of the RL updates (`optim.lr`). Default by profile: from scratch 3e-3, or
    /// 1e-5 after a warm start (`sft.levels` > 0; a larger step undoes what the warm start
    /// taught); 1e-4 for a pretrained model with LoRA, 1e-6 with full fine-tuning.
    pub lr: Option<f64>,
    /// The other settings, under their own keys: `weight_decay` (decoupled; default 0.0),
    /// `beta1` (β₁; default 0.9), `beta2` (β₂; default 0.999), `eps` (ε; default 1e-8),
    /// `max_grad_norm` (global gradient-norm clip, none = off; default 1.0). Its `lr` is not
    /// read: [`crate::TrainConfig::adamw`] puts the resolved learning rate there.
    pub adamw: AdamWConfig,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: None,
            adamw: AdamWConfig {
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
        }
    }
}

impl OptimConfig {
    /// Checks ranges, naming the field; `lr` is the resolved learning rate.
    pub fn validate(&self, lr: f64) -> Result<()> {
        positive("optim.lr", lr)?;
        let a = &self.adamw;
        for (field, v) in [("optim.beta1", a.beta1), ("optim.beta2", a.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(TrainError::config(field, format!("{v} must be in [0, 1)")));
            }
        }
        match a.max_grad_norm {
            Some(g) if g.is_nan() || g <= 0.0 => Err(TrainError::config(
                "optim.max_grad_norm",
                format!("{g} must be > 0"),
            )),
            _ => Ok(()),
        }
    }
}

impl TryFrom<toml::Table> for OptimConfig {
    type Error = String;

    /// `lr` alone, the other keys over the defaults into [`AdamWConfig`] (which refuses
    /// unknown keys).
    fn try_from(mut table: toml::Table) -> std::result::Result<Self, String> {
        let lr = table
            .remove("lr")
            .map(|v| -> std::result::Result<f64, toml::de::Error> { v.try_into() })
            .transpose()
            .map_err(|e| format!("lr: {}", e.message()))?;
        let mut full = table_of(&Self::default().adamw);
        full.extend(table);
        let adamw = toml::Value::Table(full)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())?;
        Ok(Self { lr, adamw })
    }
}

impl Serialize for OptimConfig {
    /// The keys in the order of the section's documentation; `None` values are left out.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let a = &self.adamw;
        let mut t = s.serialize_struct("OptimConfig", 6)?;
        t.serialize_field("lr", &self.lr)?;
        t.serialize_field("weight_decay", &a.weight_decay)?;
        t.serialize_field("beta1", &a.beta1)?;
        t.serialize_field("beta2", &a.beta2)?;
        t.serialize_field("eps", &a.eps)?;
        t.serialize_field("max_grad_norm", &a.max_grad_norm)?;
        t.end()
    }
}

/// The fields of `adamw` as a TOML table (a field that is `None` is left out).
fn table_of(adamw: &AdamWConfig) -> toml::Table {
    match toml::Value::try_from(adamw) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    }
}

/// Statistics of one update phase (means over optimizer steps; `tokens` is the sum).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UpdateStats {
    /// The loss.
    pub loss: f64,
    /// The clipped policy-gradient term.
    pub pg: f64,
    /// The KL estimate.
    pub kl: f64,
    /// The entropy.
    pub entropy: f64,
    /// Share of trained tokens whose ratio was clipped.
    pub clip_fraction: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Trained tokens scored, over all passes.
    pub tokens: f64,
    /// Tokens of the trained sequences (prompt and response) through the forward and backward
    /// passes, summed over optimizer steps.
    pub sequence_tokens: f64,
}

impl UpdateStats {
    fn add(&mut self, s: &UpdateStats) {
        self.loss += s.loss;
        self.pg += s.pg;
        self.kl += s.kl;
        self.entropy += s.entropy;
        self.clip_fraction += s.clip_fraction;
        self.grad_norm += s.grad_norm;
        self.tokens += s.tokens;
        self.sequence_tokens += s.sequence_tokens;
    }

    /// The means over `steps` optimizer steps of the sums in `self` (token counts stay summed).
    fn mean(self, steps: usize) -> Self {
        let n = steps.max(1) as f64;
        Self {
            loss: self.loss / n,
            pg: self.pg / n,
            kl: self.kl / n,
            entropy: self.entropy / n,
            clip_fraction: self.clip_fraction / n,
            grad_norm: self.grad_norm / n,
            tokens: self.tokens,
            sequence_tokens: self.sequence_tokens,
        }
    }
}

/// What the update phase reads of the configuration, with the defaults that depend on the
/// model's profile resolved ([`crate::TrainConfig::update_plan`]).
#[derive(Debug, Clone)]
pub struct UpdatePlan {
    /// Passes over the samples of one iteration (`update.ppo_epochs`).
    pub ppo_epochs: usize,
    /// Samples per optimizer step; 0 = all (`update.mini_batch_size`).
    pub mini_batch_size: usize,
    /// Samples per forward/backward pass (`update.micro_batch_size`).
    pub micro_batch_size: usize,
    /// Where log π_old comes from (`update.old_logprobs`).
    pub old_logprobs: OldLogprobs,
    /// Whether layer activations are recomputed in the backward pass.
    pub memory: TrainMemory,
    /// The loss, β resolved.
    pub loss: LossConfig,
    /// The behaviour policy's processing of the logits (docs/training.md): temperature, top-k
    /// and top-p of the training rollouts, used in every scoring pass.
    pub behaviour: LogitProcessing,
    /// The run's base seed (mini-batch shuffles derive from it).
    pub seed: u64,
}

impl UpdatePlan {
    /// The KL coefficient β.
    pub fn beta(&self) -> f64 {
        self.loss.beta.unwrap_or(0.0)
    }
}

/// Sets each sample's log π_old (recomputed by scoring without gradient, unless
/// `update.old_logprobs = "sampling"` keeps the behaviour log-probabilities) and, when β > 0,
/// its log π_ref (`reference`, or `policy` with its adapter off). Returns the mean
/// |behaviour − recomputed log π_old| over trained tokens when recomputed.
pub fn score_samples(
    samples: &mut [Sample],
    policy: &Policy,
    reference: Option<&Policy>,
    plan: &UpdatePlan,
) -> Result<Option<f64>> {
    let scoring = Scoring {
        behaviour: &plan.behaviour,
        micro: plan.micro_batch_size,
    };
    let mismatch = match plan.old_logprobs {
        OldLogprobs::Sampling => None,
        OldLogprobs::Recompute => {
            scoring.score(policy, samples, ScoreMode::OLD, |s, row| s.old = row)?;
            Some(mismatch(samples))
        }
    };
    if plan.beta() > 0.0 {
        let set = |s: &mut Sample, row| s.reference = Some(row);
        match reference {
            Some(r) => scoring.score(r, samples, ScoreMode::OLD, set)?,
            None => scoring.score(policy, samples, ScoreMode::REFERENCE, set)?,
        }
    }
    Ok(mismatch)
}

/// How samples are scored without gradient.
struct Scoring<'a> {
    behaviour: &'a LogitProcessing,
    micro: usize,
}

impl Scoring<'_> {
    /// Scores `samples` in micro-batches and gives each sample its row of log-probabilities
    /// of the scored tokens through `set`.
    fn score(
        &self,
        policy: &Policy,
        samples: &mut [Sample],
        mode: ScoreMode,
        set: impl Fn(&mut Sample, Vec<f32>),
    ) -> Result<()> {
        for chunk in samples.chunks_mut(self.micro.max(1)) {
            let refs: Vec<&Sample> = chunk.iter().collect();
            let (seqs, starts) = sequences(&refs);
            let rows = policy
                .score_with(&seqs, &starts, mode, self.behaviour)?
                .logprob_rows()?;
            for (s, row) in chunk.iter_mut().zip(rows) {
                set(s, row);
            }
        }
        Ok(())
    }
}

/// The token sequences and first scored positions of `samples`.
fn sequences(samples: &[&Sample]) -> (Vec<Vec<u32>>, Vec<usize>) {
    let seqs = samples.iter().map(|s| s.tokens.clone()).collect();
    let starts = samples.iter().map(|s| s.start).collect();
    (seqs, starts)
}

/// Mean |behaviour − log π_old| over the trained tokens of `samples`.
fn mismatch(samples: &[Sample]) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for s in samples {
        for ((&m, &b), &o) in s.mask.iter().zip(&s.behaviour).zip(&s.old) {
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

/// `update.ppo_epochs` passes over `samples` (scored by [`score_samples`]) in shuffled
/// mini-batches, one optimizer step each. The shuffle of iteration `iteration` is drawn from
/// the base seed and the iteration.
pub fn update(
    samples: &[Sample],
    policy: &Policy,
    opt: &mut AdamW,
    plan: &UpdatePlan,
    iteration: usize,
) -> Result<UpdateStats> {
    let seed = mix_seed(plan.seed ^ SHUFFLE_STREAM, iteration as u64);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..samples.len()).collect();
    let mb = match plan.mini_batch_size {
        0 => samples.len().max(1),
        n => n,
    };
    let step = Step { policy, plan };
    let mut total = UpdateStats::default();
    let mut steps = 0usize;
    for _ in 0..plan.ppo_epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(mb) {
            let batch: Vec<&Sample> = chunk.iter().map(|&i| &samples[i]).collect();
            total.add(&step.run(&batch, opt)?);
            steps += 1;
        }
    }
    Ok(total.mean(steps))
}

/// One optimizer step's context.
struct Step<'a> {
    policy: &'a Policy,
    plan: &'a UpdatePlan,
}

impl Step<'_> {
    /// One optimizer step over `batch`, in micro-batches whose gradients are summed.
    fn run(&self, batch: &[&Sample], opt: &mut AdamW) -> Result<UpdateStats> {
        let denominator = match self.plan.loss.aggregation {
            Aggregation::TokenMean => batch.iter().map(|s| s.trained_tokens() as f64).sum(),
            _ => batch.iter().filter(|s| s.is_trained()).count() as f64,
        };
        let vars = self.policy.trainable_vars();
        let mut grads: Option<GradStore> = None;
        let mut out = UpdateStats::default();
        let mut clipped = 0.0;
        for micro in batch.chunks(self.plan.micro_batch_size) {
            let (l, g) = self.micro_batch(micro, denominator)?;
            out.loss += l.loss.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64;
            out.pg += l.pg;
            out.kl += l.kl;
            out.entropy += l.entropy;
            out.tokens += l.tokens;
            out.sequence_tokens += micro.iter().map(|s| s.tokens.len() as f64).sum::<f64>();
            clipped += l.clip_fraction * l.tokens;
            grads = Some(match grads {
                None => g,
                Some(acc) => add_grads(acc, g, &vars)?,
            });
        }
        if let Some(g) = grads {
            out.grad_norm = opt.step(&g)?.grad_norm;
        }
        out.clip_fraction = if out.tokens > 0.0 {
            clipped / out.tokens
        } else {
            0.0
        };
        Ok(out)
    }

    /// The loss of one micro-batch and its gradients.
    fn micro_batch(&self, micro: &[&Sample], denominator: f64) -> Result<(LossOutput, GradStore)> {
        let padded = Padded::new(micro, self.policy.device())?;
        let (seqs, starts) = sequences(micro);
        // With recomputation, layer activations are recomputed in the backward step and the
        // graph is dropped after it, so a micro-batch holds one layer's activations at a time.
        let pass =
            self.policy
                .train_pass(&seqs, &starts, &self.plan.behaviour, self.plan.memory)?;
        let scores = pass.scores();
        let inputs = LossInputs {
            logprobs: &scores.logprobs,
            old_logprobs: &padded.old,
            ref_logprobs: padded.reference.as_ref(),
            entropies: &scores.entropies,
            advantages: &padded.advantages,
            mask: &padded.mask,
            denominator: Some(denominator),
        };
        let l = policy_loss(&inputs, &self.plan.loss)?;
        let g = pass.backward(&l.loss)?;
        Ok((l, g))
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
    fn new(samples: &[&Sample], device: &candle_core::Device) -> Result<Self> {
        let width = samples.iter().map(|s| s.scored_len()).max().unwrap_or(0);
        let pad = |row: fn(&Sample) -> &[f32]| -> Result<Tensor> {
            let mut flat = Vec::with_capacity(samples.len() * width);
            for &s in samples {
                let r = row(s);
                flat.extend_from_slice(&r[..r.len().min(width)]);
                flat.extend(std::iter::repeat_n(0.0, width - r.len().min(width)));
            }
            Ok(Tensor::from_vec(flat, (samples.len(), width), device)?)
        };
        for s in samples {
            if s.old.len() != s.scored_len() {
                return Err(TrainError::config(
                    "update.old_logprobs",
                    format!(
                        "a sample of trajectory {}: {} old log-probabilities for {} tokens",
                        s.trajectory,
                        s.old.len(),
                        s.scored_len()
                    ),
                ));
            }
        }
        let reference = samples
            .iter()
            .all(|s| s.reference.is_some())
            .then(|| pad(|s| s.reference.as_deref().unwrap_or_default()))
            .transpose()?;
        Ok(Self {
            old: pad(|s| &s.old)?,
            reference,
            advantages: pad(|s| &s.advantages)?,
            mask: pad(|s| &s.mask)?,
        })
    }
}

/// Adds the gradients of `g` for `vars` into `acc` (gradients of micro-batches).
pub fn add_grads(mut acc: GradStore, g: GradStore, vars: &[Var]) -> Result<GradStore> {
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

#[cfg(test)]
mod tests {
    use crate::config::TrainConfig;

    #[test]
    fn the_optim_section_keeps_its_keys_defaults_and_order() {
        let cfg = TrainConfig::from_toml("[optim]\nbeta1 = 0.8\n").unwrap();
        let o = &cfg.optim;
        assert_eq!(o.lr, None);
        assert_eq!(o.adamw.beta1, 0.8);
        assert_eq!(o.adamw.weight_decay, 0.0);
        assert_eq!(o.adamw.max_grad_norm, Some(1.0));
        let mut cfg = cfg;
        cfg.set("optim.lr", "2e-4").unwrap();
        assert_eq!(cfg.adamw().lr, 2e-4);
        let text = cfg.to_toml().unwrap();
        let section = &text[text.find("[optim]").unwrap()..];
        let keys: Vec<&str> = section
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .map(|l| l.split(" =").next().unwrap())
            .collect();
        let order = [
            "lr",
            "weight_decay",
            "beta1",
            "beta2",
            "eps",
            "max_grad_norm",
        ];
        assert_eq!(keys, order);
        assert_eq!(TrainConfig::from_toml(&text).unwrap(), cfg);
        let e = TrainConfig::from_toml("[optim]\nbeta3 = 0.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("beta3"), "{e}");
    }
}
