//! The policy objective on candle tensors (docs/training.md), and its settings (`[loss]`).
//!
//! Per response token: ρ = exp(log π_θ − log π_old),
//! L_clip = −min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A), with the dual clip
//! L = min(L_clip, −c·A) for A < 0; plus β·KL(π_θ ‖ π_ref) by the k1/k2/k3 estimator, minus the
//! entropy coefficient times the entropy; each term reduced by the configured aggregation over
//! the tokens where `mask` is 1.
//!
//! Every tensor argument is f32 with shape `[batch, tokens]` (one row per sample, padded;
//! `mask` is 1 on trained tokens and 0 elsewhere).

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::checks::finite_non_negative;
use crate::error::{Result, TrainError};

/// The KL estimator of docs/training.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimator {
    /// `log π − log π_ref`.
    K1,
    /// `½ (log π − log π_ref)²`.
    K2,
    /// `exp(log π_ref − log π) − (log π_ref − log π) − 1`, clamped (alias `low_var_kl`).
    #[default]
    #[serde(alias = "low_var_kl")]
    K3,
}

/// How per-token losses are reduced to one number (docs/training.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// Mean over all unmasked tokens of the mini-batch.
    #[default]
    TokenMean,
    /// Sum over each sequence's tokens, mean over sequences.
    SeqMeanTokenSum,
    /// Mean over each sequence's tokens, mean over sequences.
    SeqMeanTokenMean,
}

/// The policy loss (docs/training.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// ε_low: the ratio is clipped below at 1 − ε_low. Default 0.2.
    pub clip_low: f64,
    /// ε_high: the ratio is clipped above at 1 + ε_high. Default 0.2.
    pub clip_high: f64,
    /// Dual clip constant c (> 1) bounding the loss of negative-advantage tokens at −c·A.
    /// Default 3.0; none turns it off.
    pub dual_clip: Option<f64>,
    /// KL coefficient β (`--beta`); 0 skips the reference policy. Default by profile: 0.01
    /// for a pretrained model, 0 for a model trained from scratch (its initial policy is noise).
    pub beta: Option<f64>,
    /// KL estimator. Default `k3` (`low_var_kl`).
    pub kl_estimator: KlEstimator,
    /// The k3 estimate is clamped to ±this. Default 10.
    pub kl_clamp: f64,
    /// Entropy bonus coefficient (subtracted from the loss). Default 0.
    pub entropy_coef: f64,
    /// Reduction over tokens. Default `token-mean`.
    pub aggregation: Aggregation,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: Some(3.0),
            beta: None,
            kl_estimator: KlEstimator::K3,
            kl_clamp: 10.0,
            entropy_coef: 0.0,
            aggregation: Aggregation::TokenMean,
        }
    }
}

impl LossConfig {
    /// Checks ranges, naming the field; `beta` is the resolved KL coefficient.
    pub fn validate(&self, beta: f64) -> Result<()> {
        finite_non_negative("loss.clip_low", self.clip_low)?;
        finite_non_negative("loss.clip_high", self.clip_high)?;
        if self.clip_low >= 1.0 {
            return Err(TrainError::config("loss.clip_low", "must be < 1"));
        }
        if let Some(c) = self.dual_clip {
            if !(c > 1.0 && c.is_finite()) {
                return Err(TrainError::config(
                    "loss.dual_clip",
                    format!("{c} must be > 1"),
                ));
            }
        }
        finite_non_negative("loss.beta", beta)?;
        finite_non_negative("loss.entropy_coef", self.entropy_coef)?;
        finite_non_negative("loss.kl_clamp", self.kl_clamp)
    }
}

/// Log-ratio clamp before `exp`, so a wildly off-policy token cannot overflow.
const LOG_RATIO_CLAMP: f64 = 20.0;

/// The inputs of [`policy_loss`].
#[derive(Debug, Clone, Copy)]
pub struct LossInputs<'a> {
    /// log π_θ(token), with gradient: `[batch, tokens]`.
    pub logprobs: &'a Tensor,
    /// log π_old(token), no gradient: `[batch, tokens]`.
    pub old_logprobs: &'a Tensor,
    /// log π_ref(token): `[batch, tokens]`; `None` when β = 0.
    pub ref_logprobs: Option<&'a Tensor>,
    /// Entropy of π_θ at each token's position: `[batch, tokens]`.
    pub entropies: &'a Tensor,
    /// Advantage of each token: `[batch, tokens]`.
    pub advantages: &'a Tensor,
    /// 1 for tokens that count, 0 for prompt, padding and masked tokens: `[batch, tokens]`.
    pub mask: &'a Tensor,
    /// The divisor of the aggregation when this batch is one micro-batch of a larger
    /// mini-batch: the mini-batch's token count (`token-mean`) or sequence count (the
    /// `seq-mean-*` modes). `None`: this batch's own. Summing the losses of the micro-batches
    /// then gives the mini-batch's loss.
    pub denominator: Option<f64>,
}

/// The loss and the scalars logged with it.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The scalar to differentiate: pg − entropy_coef·entropy + β·kl.
    pub loss: Tensor,
    /// The aggregated clipped surrogate.
    pub pg: f64,
    /// The aggregated KL estimate (0 without a reference).
    pub kl: f64,
    /// The aggregated entropy.
    pub entropy: f64,
    /// Share of masked-in tokens where the clipped term was the active one.
    pub clip_fraction: f64,
    /// Number of masked-in tokens.
    pub tokens: f64,
}

/// The clipped surrogate with optional dual clip, per token: `[batch, tokens]`, and the 0/1
/// indicator of tokens where clipping was active.
pub fn clipped_surrogate(
    logprobs: &Tensor,
    old_logprobs: &Tensor,
    advantages: &Tensor,
    cfg: &LossConfig,
) -> Result<(Tensor, Tensor)> {
    let log_ratio = (logprobs - old_logprobs)?.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)?;
    let ratio = log_ratio.exp()?;
    let neg_adv = advantages.neg()?;
    let unclipped = (&neg_adv * &ratio)?;
    let clipped_ratio = ratio.clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high)?;
    let clipped = (&neg_adv * clipped_ratio)?;
    // −min(ρA, clip(ρ)A) = max(−ρA, −clip(ρ)A).
    let pg = unclipped.maximum(&clipped)?;
    let clip_active = clipped.gt(&unclipped)?.to_dtype(DType::F32)?;
    let pg = match cfg.dual_clip {
        None => pg,
        Some(c) => {
            // For A < 0 the loss is bounded by −c·A (the dual clip).
            let bound = (&neg_adv * c)?;
            let lower = pg.minimum(&bound)?;
            let negative = advantages.lt(0.0)?.to_dtype(DType::F32)?;
            let positive = (1.0 - &negative)?;
            ((&negative * lower)? + (positive * pg)?)?
        }
    };
    Ok((pg, clip_active))
}

/// The per-token KL estimate of π_θ from π_ref: `[batch, tokens]`.
pub fn kl_penalty(
    logprobs: &Tensor,
    ref_logprobs: &Tensor,
    estimator: KlEstimator,
    clamp: f64,
) -> Result<Tensor> {
    let diff = (logprobs - ref_logprobs)?;
    Ok(match estimator {
        KlEstimator::K1 => diff,
        KlEstimator::K2 => (diff.sqr()? * 0.5)?,
        KlEstimator::K3 => {
            // exp(ref − logπ) − (ref − logπ) − 1, clamped.
            let r = diff.neg()?;
            ((r.exp()? - &r)? - 1.0)?.clamp(-clamp, clamp)?
        }
    })
}

/// Reduces a per-token quantity `[batch, tokens]` under `mask` `[batch, tokens]` to a scalar.
/// Rows with no masked-in token are left out of sequence means. `denominator` replaces the
/// count of tokens (or sequences) divided by, see [`LossInputs::denominator`].
pub fn aggregate(
    values: &Tensor,
    mask: &Tensor,
    how: Aggregation,
    denominator: Option<f64>,
) -> Result<Tensor> {
    let masked = (values * mask)?;
    match how {
        Aggregation::TokenMean => {
            let n = match denominator {
                Some(d) => d,
                None => mask.sum_all()?.to_scalar::<f32>()? as f64,
            };
            Ok((masked.sum_all()? / n.max(1.0))?)
        }
        Aggregation::SeqMeanTokenSum | Aggregation::SeqMeanTokenMean => {
            let per_row = masked.sum(D::Minus1)?;
            let counts = mask.sum(D::Minus1)?;
            let present = counts.gt(0.0)?.to_dtype(DType::F32)?;
            let rows = match denominator {
                Some(d) => d,
                None => present.sum_all()?.to_scalar::<f32>()? as f64,
            };
            let per_row = if how == Aggregation::SeqMeanTokenMean {
                (per_row / counts.maximum(1.0)?)?
            } else {
                per_row
            };
            Ok(((per_row * present)?.sum_all()? / rows.max(1.0))?)
        }
    }
}

/// The full objective (docs/training.md) for one mini-batch.
pub fn policy_loss(inputs: &LossInputs<'_>, cfg: &LossConfig) -> Result<LossOutput> {
    let mask = inputs.mask;
    let (pg_tok, clip_active) =
        clipped_surrogate(inputs.logprobs, inputs.old_logprobs, inputs.advantages, cfg)?;
    let pg = aggregate(&pg_tok, mask, cfg.aggregation, inputs.denominator)?;
    let entropy = aggregate(inputs.entropies, mask, cfg.aggregation, inputs.denominator)?;
    let mut loss = pg.clone();
    if cfg.entropy_coef != 0.0 {
        loss = (loss - (&entropy * cfg.entropy_coef)?)?;
    }
    let mut kl_value = 0.0;
    if let Some(reference) = inputs.ref_logprobs {
        let kl_tok = kl_penalty(inputs.logprobs, reference, cfg.kl_estimator, cfg.kl_clamp)?;
        let kl = aggregate(&kl_tok, mask, cfg.aggregation, inputs.denominator)?;
        kl_value = scalar(&kl)?;
        let beta = cfg.beta.unwrap_or(0.0);
        if beta != 0.0 {
            loss = (loss + (kl * beta)?)?;
        }
    }
    let tokens = mask.sum_all()?.to_scalar::<f32>()? as f64;
    let clipped = (clip_active * mask)?.sum_all()?.to_scalar::<f32>()? as f64;
    Ok(LossOutput {
        pg: scalar(&pg)?,
        kl: kl_value,
        entropy: scalar(&entropy)?,
        clip_fraction: if tokens > 0.0 { clipped / tokens } else { 0.0 },
        tokens,
        loss,
    })
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.detach().to_dtype(DType::F32)?.to_scalar::<f32>()? as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn row(v: &[f32]) -> Tensor {
        Tensor::from_slice(v, (1, v.len()), &Device::Cpu).unwrap()
    }

    fn vals(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    fn no_dual() -> LossConfig {
        LossConfig {
            dual_clip: None,
            ..LossConfig::default()
        }
    }

    #[test]
    fn surrogate_inside_the_trust_region_is_minus_ratio_times_advantage() {
        let old = row(&[0.0, 0.0]);
        let new = row(&[0.1f32.ln_1p(), (-0.1f32).ln_1p()]); // ρ = 1.1, 0.9
        let (pg, clip) = clipped_surrogate(&new, &old, &row(&[2.0, -1.0]), &no_dual()).unwrap();
        close(&vals(&pg), &[-2.2, 0.9]);
        close(&vals(&clip), &[0.0, 0.0]);
    }

    #[test]
    fn clip_high_caps_positive_advantages() {
        // ρ = 1.5 > 1.2 with A = 1: −min(1.5, 1.2) = −1.2, clipped.
        let (pg, clip) =
            clipped_surrogate(&row(&[1.5f32.ln()]), &row(&[0.0]), &row(&[1.0]), &no_dual())
                .unwrap();
        close(&vals(&pg), &[-1.2]);
        close(&vals(&clip), &[1.0]);
        // Asymmetric: ε_high = 0.3 gives −1.3.
        let cfg = LossConfig {
            clip_high: 0.3,
            ..no_dual()
        };
        let (pg, _) =
            clipped_surrogate(&row(&[1.5f32.ln()]), &row(&[0.0]), &row(&[1.0]), &cfg).unwrap();
        close(&vals(&pg), &[-1.3]);
    }

    #[test]
    fn clip_low_caps_negative_advantages() {
        // ρ = 0.5 < 0.8 with A = −1: max(0.5, 0.8) = 0.8, clipped.
        let (pg, clip) = clipped_surrogate(
            &row(&[0.5f32.ln()]),
            &row(&[0.0]),
            &row(&[-1.0]),
            &no_dual(),
        )
        .unwrap();
        close(&vals(&pg), &[0.8]);
        close(&vals(&clip), &[1.0]);
        // ρ = 0.5 with A = +1 is not clipped: −0.5.
        let (pg, clip) =
            clipped_surrogate(&row(&[0.5f32.ln()]), &row(&[0.0]), &row(&[1.0]), &no_dual())
                .unwrap();
        close(&vals(&pg), &[-0.5]);
        close(&vals(&clip), &[0.0]);
    }

    #[test]
    fn dual_clip_bounds_negative_advantages_only() {
        let cfg = LossConfig {
            dual_clip: Some(3.0),
            ..LossConfig::default()
        };
        // ρ = 5, A = −1: plain clip gives 5, dual clip bounds it at 3.
        let (pg, _) = clipped_surrogate(
            &row(&[5f32.ln(), 5f32.ln()]),
            &row(&[0.0, 0.0]),
            &row(&[-1.0, 1.0]),
            &cfg,
        )
        .unwrap();
        close(&vals(&pg), &[3.0, -1.2]);
        let (pg, _) =
            clipped_surrogate(&row(&[5f32.ln()]), &row(&[0.0]), &row(&[-1.0]), &no_dual()).unwrap();
        close(&vals(&pg), &[5.0]);
    }

    #[test]
    fn kl_estimators_match_hand_numbers() {
        let lp = row(&[-1.0, -2.0]);
        let rf = row(&[-1.5, -1.0]);
        close(
            &vals(&kl_penalty(&lp, &rf, KlEstimator::K1, 10.0).unwrap()),
            &[0.5, -1.0],
        );
        close(
            &vals(&kl_penalty(&lp, &rf, KlEstimator::K2, 10.0).unwrap()),
            &[0.125, 0.5],
        );
        let k3 = |d: f32| (-d).exp() + d - 1.0;
        close(
            &vals(&kl_penalty(&lp, &rf, KlEstimator::K3, 10.0).unwrap()),
            &[k3(0.5), k3(-1.0)],
        );
        // Clamped at ±10: d = −5 gives e⁵ − 6 ≈ 142.4 → 10.
        let big = kl_penalty(&row(&[-6.0]), &row(&[-1.0]), KlEstimator::K3, 10.0).unwrap();
        close(&vals(&big), &[10.0]);
    }

    #[test]
    fn aggregations_match_hand_numbers() {
        let v =
            Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], (2, 3), &Device::Cpu).unwrap();
        let m =
            Tensor::from_slice(&[1.0f32, 1.0, 0.0, 1.0, 1.0, 1.0], (2, 3), &Device::Cpu).unwrap();
        let s = |how| {
            aggregate(&v, &m, how, None)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!((s(Aggregation::TokenMean) - 18.0 / 5.0).abs() < 1e-6);
        assert!((s(Aggregation::SeqMeanTokenSum) - (3.0 + 15.0) / 2.0).abs() < 1e-6);
        assert!((s(Aggregation::SeqMeanTokenMean) - (1.5 + 5.0) / 2.0).abs() < 1e-6);
        // A fully masked row is left out of sequence means.
        let m0 =
            Tensor::from_slice(&[1.0f32, 1.0, 0.0, 0.0, 0.0, 0.0], (2, 3), &Device::Cpu).unwrap();
        let s0 = aggregate(&v, &m0, Aggregation::SeqMeanTokenMean, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((s0 - 1.5).abs() < 1e-6);
        // Micro-batches with the mini-batch's denominator sum to the mini-batch's value.
        for how in [
            Aggregation::TokenMean,
            Aggregation::SeqMeanTokenSum,
            Aggregation::SeqMeanTokenMean,
        ] {
            let whole = s(how);
            let denom = if how == Aggregation::TokenMean {
                5.0
            } else {
                2.0
            };
            let part = |r: usize| {
                let (vr, mr) = (v.narrow(0, r, 1).unwrap(), m.narrow(0, r, 1).unwrap());
                aggregate(&vr, &mr, how, Some(denom))
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            assert!((part(0) + part(1) - whole).abs() < 1e-5, "{how:?}");
        }
    }

    #[test]
    fn policy_loss_combines_terms_and_gradients_flow() {
        let var = Var::from_tensor(&row(&[-1.0, -2.0, -0.5])).unwrap();
        let old = row(&[-1.0, -2.0, -0.5]);
        let rf = row(&[-1.2, -2.0, -0.5]);
        let ent = row(&[0.7, 0.2, 0.3]);
        let adv = row(&[1.0, -1.0, 5.0]);
        let mask = row(&[1.0, 1.0, 0.0]);
        let cfg = LossConfig {
            entropy_coef: 0.1,
            beta: Some(0.5),
            kl_estimator: KlEstimator::K1,
            ..LossConfig::default()
        };
        let inputs = LossInputs {
            logprobs: var.as_tensor(),
            old_logprobs: &old,
            ref_logprobs: Some(&rf),
            entropies: &ent,
            advantages: &adv,
            mask: &mask,
            denominator: None,
        };
        let out = policy_loss(&inputs, &cfg).unwrap();
        // ρ = 1: pg = mean(−1, 1) = 0; kl = mean(0.2, 0) = 0.1; entropy = 0.45.
        assert!(out.pg.abs() < 1e-6);
        assert!((out.kl - 0.1).abs() < 1e-6);
        assert!((out.entropy - 0.45).abs() < 1e-6);
        assert_eq!(out.tokens, 2.0);
        let total = out.loss.to_scalar::<f32>().unwrap() as f64;
        assert!((total - (0.0 - 0.045 + 0.05)).abs() < 1e-6);
        let grads = out.loss.backward().unwrap();
        let g = vals(grads.get(var.as_tensor()).unwrap());
        // d/dlogπ: −A·ρ/2 + β·(1/2) per masked token; the masked-out token gets nothing.
        close(&g, &[-0.5 + 0.25, 0.5 + 0.25, 0.0]);
    }
}
