//! Group-relative normalisation shared by both levels:
//! `(x − mean_G) / F_G` (arXiv 2505.10978 Eq. 3 and Eq. 7; SPEC §1.4, §1.6).

use crate::config::Norm;

/// What a group with a single member gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Singleton {
    /// Exactly 0 (SPEC §1.4: nothing to compare against).
    Zero,
    /// Its raw value, i.e. mean taken as 0 and standard deviation as 1 (verl-agent's
    /// episode-level convention, SPEC §1.9): `x / (1 + ε)` with `std`, `x / F` with `fixed`.
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
#[derive(Debug, Clone, Default)]
pub struct GroupStats {
    pub count: Vec<u32>,
    pub mean: Vec<f64>,
    /// Sample standard deviation (n − 1); 0 for groups of one.
    pub std: Vec<f64>,
    /// Whether every member has exactly the same value.
    pub all_equal: Vec<bool>,
}

/// Statistics of `values[i]` grouped by `keys[i]` (keys in `0..num_groups`). Two linear passes.
pub fn group_stats(keys: &[u32], values: &[f64], num_groups: usize) -> GroupStats {
    #[derive(Clone, Copy)]
    struct Acc {
        n: u32,
        sum: f64,
        min: f64,
        max: f64,
    }
    let empty = Acc {
        n: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };
    let mut acc = vec![empty; num_groups];
    for (&k, &v) in keys.iter().zip(values) {
        let a = &mut acc[k as usize];
        a.n += 1;
        a.sum += v;
        a.min = a.min.min(v);
        a.max = a.max.max(v);
    }
    let mean: Vec<f64> = acc.iter().map(|a| a.sum / a.n.max(1) as f64).collect();
    let mut sq = vec![0.0f64; num_groups];
    for (&k, &v) in keys.iter().zip(values) {
        let d = v - mean[k as usize];
        sq[k as usize] += d * d;
    }
    let std = sq
        .iter()
        .zip(&acc)
        .map(|(s, a)| {
            if a.n > 1 {
                (s / (a.n - 1) as f64).sqrt()
            } else {
                0.0
            }
        })
        .collect();
    GroupStats {
        count: acc.iter().map(|a| a.n).collect(),
        mean,
        std,
        all_equal: acc.iter().map(|a| a.min == a.max).collect(),
    }
}

/// `(values[i] − mean) / F` within each group, writing into `out`.
///
/// A group of one follows `rule.singleton`; a group whose values are all exactly equal gives
/// exactly 0 (tested by equality, never by dividing a rounding residue by ε).
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
            (v - stats.mean[k]) / rule.factor(stats.std[k])
        };
    }
}
