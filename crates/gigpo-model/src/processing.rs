//! The behaviour policy's distribution over the next token: softmax(logits / T) restricted to
//! the top-k tokens and then to the top-p nucleus, renormalised over the kept set.
//!
//! [`crate::Policy::generate`] samples from it and [`crate::Policy::score_with`] recomputes it,
//! both through the functions of this module, so the kept set and the log-probabilities agree.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// Log-probability reported for a token outside the kept set (log 0 = −∞, clamped to a finite
/// value so that differences and ratios stay defined; its gradient is 0).
pub const EXCLUDED_LOGPROB: f32 = -1.0e4;

/// How logits become the distribution that is sampled from and scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogitProcessing {
    /// Softmax temperature T > 0 (logits are divided by it).
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Then keep the smallest set of most likely tokens whose probability reaches `top_p`
    /// (1 = all).
    pub top_p: f64,
}

impl Default for LogitProcessing {
    fn default() -> Self {
        Self::RAW
    }
}

impl LogitProcessing {
    /// The model's own distribution: softmax of the raw logits.
    pub const RAW: LogitProcessing = LogitProcessing {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
    };

    /// Checks ranges: T > 0 and finite, 0 < top_p ≤ 1.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(ModelError::arg(
                "processing.temperature",
                format!("{} must be > 0", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::arg(
                "processing.top_p",
                format!("{} must be in (0, 1]", self.top_p),
            ));
        }
        Ok(())
    }

    /// Whether the set of tokens is restricted (top-k or top-p on).
    pub(crate) fn truncates(&self) -> bool {
        self.top_k > 0 || self.top_p < 1.0
    }

    /// Whether this is the raw distribution.
    pub(crate) fn is_raw(&self) -> bool {
        self.temperature == 1.0 && !self.truncates()
    }
}

/// Descending logit, ties by ascending id.
fn by_logit(row: &[f32]) -> impl Fn(&u32, &u32) -> Ordering + '_ {
    move |&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b))
}

/// The kept ids of one row of logits, most likely first; `None` when nothing is truncated.
pub(crate) fn kept_set(row: &[f32], p: &LogitProcessing) -> Option<Vec<u32>> {
    if !p.truncates() {
        return None;
    }
    let v = row.len();
    let t = p.temperature;
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weight = |i: u32| (((row[i as usize] - max) as f64) / t).exp();
    let mut idx: Vec<u32> = (0..v as u32).collect();
    if p.top_k > 0 && p.top_k < v {
        idx.select_nth_unstable_by(p.top_k - 1, by_logit(row));
        idx.truncate(p.top_k);
    }
    if p.top_p >= 1.0 {
        idx.sort_unstable_by(by_logit(row));
        return Some(idx);
    }
    let total: f64 = idx.iter().map(|&i| weight(i)).sum();
    // Ids lighter than this carry less than (1 − top_p) / 2 of the mass together, so the
    // nucleus lies among the heavier ones: only those need sorting.
    let light = (1.0 - p.top_p) * total / (2.0 * idx.len() as f64);
    let mut heavy: Vec<u32> = idx
        .iter()
        .copied()
        .filter(|&i| weight(i) >= light)
        .collect();
    heavy.sort_unstable_by(by_logit(row));
    if let Some(n) = nucleus(&heavy, &weight, total, p.top_p) {
        heavy.truncate(n);
        return Some(heavy);
    }
    idx.sort_unstable_by(by_logit(row));
    let n = nucleus(&idx, &weight, total, p.top_p).unwrap_or(idx.len());
    idx.truncate(n);
    Some(idx)
}

/// Length of the shortest prefix of `sorted` whose probability reaches `top_p`.
fn nucleus(sorted: &[u32], weight: &impl Fn(u32) -> f64, total: f64, top_p: f64) -> Option<usize> {
    let mut acc = 0.0;
    for (n, &i) in sorted.iter().enumerate() {
        acc += weight(i) / total;
        if acc >= top_p {
            return Some(n + 1);
        }
    }
    None
}

/// One row's processed distribution: z = logit / T and log Σ_kept exp(z).
pub(crate) struct RowDist {
    /// Kept ids, most likely first (`None`: all).
    pub kept: Option<Vec<u32>>,
    /// 1 / T.
    pub inv_t: f32,
    /// log Σ over the kept ids of exp(logit / T).
    pub lse: f32,
    /// Entropy of the kept distribution.
    pub entropy: f32,
}

impl RowDist {
    /// The distribution of `row` under `p` (one pass of exponentials over the kept logits).
    pub fn new(row: &[f32], p: &LogitProcessing) -> Self {
        let kept = kept_set(row, p);
        let inv_t = (1.0 / p.temperature) as f32;
        let (lse, entropy) = match &kept {
            None => lse_entropy(row.iter().map(|&z| z * inv_t).collect()),
            Some(k) => lse_entropy(k.iter().map(|&i| row[i as usize] * inv_t).collect()),
        };
        RowDist {
            kept,
            inv_t,
            lse,
            entropy,
        }
    }

    /// Calls `f(id, z)` for every kept id.
    pub fn for_kept(&self, row: &[f32], mut f: impl FnMut(usize, f32)) {
        match &self.kept {
            None => row
                .iter()
                .enumerate()
                .for_each(|(j, &l)| f(j, l * self.inv_t)),
            Some(k) => k
                .iter()
                .for_each(|&j| f(j as usize, row[j as usize] * self.inv_t)),
        }
    }

    /// Whether `id` is kept.
    pub fn keeps(&self, id: usize) -> bool {
        self.kept
            .as_ref()
            .is_none_or(|k| k.iter().any(|&j| j as usize == id))
    }

    /// log π(`target`), [`EXCLUDED_LOGPROB`] outside the kept set.
    pub fn logprob(&self, row: &[f32], target: usize) -> f32 {
        if self.keeps(target) {
            row[target] * self.inv_t - self.lse
        } else {
            EXCLUDED_LOGPROB
        }
    }

    /// Writes d(g_l·log π(target) + g_h·H)/d logit into `out` (zero outside the kept set).
    pub fn grad(&self, row: &[f32], target: usize, (gl, gh): (f32, f32), out: &mut [f32]) {
        let h = self.entropy;
        let gl = if self.keeps(target) { gl } else { 0.0 };
        let inv_t = self.inv_t;
        let d = |p: f32, lp: f32| (-gl * p - gh * p * (lp + h)) * inv_t;
        if self.kept.is_none() {
            // The whole row: log-probabilities, then their exponentials in one vectorised pass.
            for (o, &z) in out.iter_mut().zip(row) {
                *o = z * inv_t - self.lse;
            }
            let mut p = out.to_vec();
            crate::exp::exp_in_place(&mut p);
            for (o, p) in out.iter_mut().zip(p) {
                *o = d(p, *o);
            }
        } else {
            out.iter_mut().for_each(|o| *o = 0.0);
            self.for_kept(row, |j, z| {
                let lp = z - self.lse;
                out[j] = d(lp.exp(), lp);
            });
        }
        if gl != 0.0 {
            out[target] += gl * inv_t;
        }
    }
}

/// (log Σ exp(z), entropy of softmax(z)) in one pass of exponentials: with m = max z,
/// s = Σ e^(z−m) and u = Σ e^(z−m)·(z−m), log Σ exp(z) = m + ln s and
/// H = −Σ p·log p = ln s − u / s.
fn lse_entropy(mut z: Vec<f32>) -> (f32, f32) {
    use crate::exp::{dot, exp_in_place, max, sum};
    let m = max(&z);
    if m == f32::NEG_INFINITY {
        return (m, 0.0);
    }
    z.iter_mut().for_each(|v| *v -= m);
    let mut e = z.clone();
    exp_in_place(&mut e);
    let (s, u) = (sum(&e), dot(&e, &z));
    (m + s.ln(), s.ln() - u / s)
}
