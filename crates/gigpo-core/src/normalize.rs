//! Group-relative normalisation shared by both levels: `(x − mean_G) / F_G`
//! (arXiv 2505.10978 Eq. 3 and Eq. 7; docs/advantages.md, "Normalisation").

use crate::config::Norm;

/// What a group with a single member gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Singleton {
    /// Exactly 0: nothing to compare against.
    Zero,
    /// Its raw value, i.e. mean taken as 0 and standard deviation as 1 (verl-agent's
    /// episode-level convention, docs/advantages.md, "The `verl-agent` preset"): `x / (1 + ε)`
    /// with `std`, `x / F` with `fixed`.
    Raw,
}

/// How to normalise.
#[derive(Debug, Clone, Copy)]
pub struct NormRule {
    pub norm: Norm,
    pub fixed: f64,
    pub epsilon: f64,
    pub singleton: Singleton,
}

impl NormRule {
    /// The divisor F for a group with sample standard deviation `std`.
    pub fn factor(&self, std: f64) -> f64 {
        match self.norm {
            Norm::Std => std + self.epsilon,
            Norm::Fixed => self.fixed,
        }
    }
}

/// Per-group running statistics.
///
/// Sums run over the values divided by a power of two per group (`scale`), chosen so that every
/// scaled value has magnitude below 2: the sum, the mean and the squared deviations then stay
/// finite for any finite input, and because a power of two is exact in binary floating point
/// the results equal the unscaled formulas wherever those do not overflow.
#[derive(Debug, Clone, Default)]
pub struct GroupStats {
    pub count: Vec<u32>,
    /// The power of two each group's values are divided by (1 when they are at most 1 in size).
    pub scale: Vec<f64>,
    /// The mean of the scaled values.
    pub scaled_mean: Vec<f64>,
    /// Sample standard deviation (n − 1) of the scaled values; 0 for groups of one.
    pub scaled_std: Vec<f64>,
    /// Whether every member has exactly the same value.
    pub all_equal: Vec<bool>,
}

impl GroupStats {
    /// The mean of group `k` (finite for finite values: its magnitude is at most the largest).
    pub fn mean(&self, k: usize) -> f64 {
        self.scaled_mean[k] * self.scale[k]
    }

    /// The sample standard deviation of group `k` (infinite only where it exceeds `f64::MAX`).
    pub fn std(&self, k: usize) -> f64 {
        self.scaled_std[k] * self.scale[k]
    }
}

/// The power of two that brings `max_abs` below 2: 1 for `max_abs <= 1`, at most 2^1023.
fn scale_for(max_abs: f64) -> f64 {
    if max_abs <= 1.0 || max_abs.is_nan() {
        return 1.0;
    }
    let exponent = max_abs.log2().ceil().min(1023.0) as i32;
    2f64.powi(exponent)
}

/// Statistics of `values[i]` grouped by `keys[i]` (keys in `0..num_groups`). Three linear passes.
pub fn group_stats(keys: &[u32], values: &[f64], num_groups: usize) -> GroupStats {
    let mut count = vec![0u32; num_groups];
    let mut min = vec![f64::INFINITY; num_groups];
    let mut max = vec![f64::NEG_INFINITY; num_groups];
    for (&k, &v) in keys.iter().zip(values) {
        let k = k as usize;
        count[k] += 1;
        min[k] = min[k].min(v);
        max[k] = max[k].max(v);
    }
    let scale: Vec<f64> = min
        .iter()
        .zip(&max)
        .map(|(lo, hi)| scale_for(lo.abs().max(hi.abs())))
        .collect();
    let mut sum = vec![0.0f64; num_groups];
    for (&k, &v) in keys.iter().zip(values) {
        sum[k as usize] += v / scale[k as usize];
    }
    let scaled_mean: Vec<f64> = sum
        .iter()
        .zip(&count)
        .map(|(s, &n)| s / n.max(1) as f64)
        .collect();
    let mut sq = vec![0.0f64; num_groups];
    for (&k, &v) in keys.iter().zip(values) {
        let k = k as usize;
        let d = v / scale[k] - scaled_mean[k];
        sq[k] += d * d;
    }
    let scaled_std = sq
        .iter()
        .zip(&count)
        .map(|(s, &n)| {
            if n > 1 {
                (s / (n - 1) as f64).sqrt()
            } else {
                0.0
            }
        })
        .collect();
    GroupStats {
        count,
        scale,
        scaled_mean,
        scaled_std,
        all_equal: min.iter().zip(&max).map(|(lo, hi)| lo == hi).collect(),
    }
}

/// `(values[i] − mean) / F` within each group, writing into `out`.
///
/// A group of one follows `rule.singleton`; a group whose values are all exactly equal gives
/// exactly 0 (tested by equality, never by dividing a rounding residue by ε). The difference is
/// taken on the scaled values, so it cannot overflow; the result is infinite only where the true
/// quotient exceeds `f64::MAX` (a tiny `fixed_norm`), which the caller reports.
pub fn normalize(
    keys: &[u32],
    values: &[f64],
    stats: &GroupStats,
    rule: NormRule,
    out: &mut [f64],
) {
    for ((o, &k), &v) in out.iter_mut().zip(keys).zip(values) {
        let k = k as usize;
        *o = if stats.count[k] == 1 {
            match rule.singleton {
                Singleton::Zero => 0.0,
                Singleton::Raw => v / rule.factor(1.0),
            }
        } else if stats.all_equal[k] {
            0.0
        } else {
            let (p, d) = (stats.scale[k], v / stats.scale[k] - stats.scaled_mean[k]);
            match rule.norm {
                // (p·d) / (p·σ + ε) = d / (σ + ε/p)
                Norm::Std => d / (stats.scaled_std[k] + rule.epsilon / p),
                Norm::Fixed => d / rule.fixed * p,
            }
        };
    }
}
