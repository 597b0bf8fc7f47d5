//! Seeds: mixing, and the split between training and evaluation levels.
//!
//! Training seeds lie in [`TRAIN_SEEDS`] = [0, 2³¹) and evaluation seeds in [`EVAL_SEEDS`] =
//! [2³¹, 2³²). The ranges do not overlap, so an evaluation level (a level is a function of its
//! seed) is never a training level. Within each range the i-th seed is a hash of the base seed
//! and i, so two runs with the same base seed see the same levels in the same order.
//!
//! ```
//! use gigpo_env::seed::{SeedSplit, EVAL_SEEDS, TRAIN_SEEDS};
//!
//! let split = SeedSplit::new(42);
//! assert!(TRAIN_SEEDS.contains(&split.train(0)));
//! assert!(EVAL_SEEDS.contains(&split.eval(0)));
//! assert_eq!(split.train(5), SeedSplit::new(42).train(5));
//! ```

use std::ops::Range;

/// Where training seeds come from: [0, 2³¹).
pub const TRAIN_SEEDS: Range<u64> = 0..(1 << 31);
/// Where evaluation seeds come from: [2³¹, 2³²).
pub const EVAL_SEEDS: Range<u64> = (1 << 31)..(1 << 32);

const LOW_31: u64 = (1 << 31) - 1;

// The two ranges must not overlap (checked when compiling).
const _: () = assert!(TRAIN_SEEDS.end <= EVAL_SEEDS.start);
const EVAL_STREAM: u64 = 0x6576_616c_7365_6564; // "evalseed"

/// The SplitMix64 finaliser: a bijective, well-spread hash of 64 bits.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed derived from two numbers (a seed and a stream or attempt number).
pub fn mix_seed(seed: u64, stream: u64) -> u64 {
    splitmix64(seed ^ splitmix64(stream))
}

/// Training and evaluation seeds derived from one base seed, from disjoint ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedSplit {
    base: u64,
}

impl SeedSplit {
    /// The split for a run's base seed.
    pub fn new(base: u64) -> Self {
        Self { base }
    }

    /// The `i`-th training seed, in [`TRAIN_SEEDS`].
    pub fn train(&self, i: u64) -> u64 {
        mix_seed(self.base, i) & LOW_31
    }

    /// The `i`-th evaluation seed, in [`EVAL_SEEDS`].
    pub fn eval(&self, i: u64) -> u64 {
        EVAL_SEEDS.start | (mix_seed(self.base ^ EVAL_STREAM, i) & LOW_31)
    }

    /// Training seeds `start .. start + n`.
    pub fn train_seeds(&self, start: u64, n: usize) -> Vec<u64> {
        (start..start + n as u64).map(|i| self.train(i)).collect()
    }

    /// Evaluation seeds `0 .. n`.
    pub fn eval_seeds(&self, n: usize) -> Vec<u64> {
        (0..n as u64).map(|i| self.eval(i)).collect()
    }

    /// Whether `seed` lies in the training range.
    pub fn is_train(seed: u64) -> bool {
        TRAIN_SEEDS.contains(&seed)
    }

    /// Whether `seed` lies in the evaluation range.
    pub fn is_eval(seed: u64) -> bool {
        EVAL_SEEDS.contains(&seed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ranges_are_disjoint_and_seeds_stay_inside() {
        for base in [0, 1, 42, u64::MAX] {
            let split = SeedSplit::new(base);
            let train: HashSet<u64> = split.train_seeds(0, 5000).into_iter().collect();
            let eval: HashSet<u64> = split.eval_seeds(5000).into_iter().collect();
            assert!(train
                .iter()
                .all(|&s| SeedSplit::is_train(s) && !SeedSplit::is_eval(s)));
            assert!(eval
                .iter()
                .all(|&s| SeedSplit::is_eval(s) && !SeedSplit::is_train(s)));
            assert!(train.is_disjoint(&eval));
            // Hashing spreads the seeds: almost no repeats among 5000.
            assert!(train.len() > 4990 && eval.len() > 4990);
        }
    }

    #[test]
    fn deterministic_per_base_and_different_across_bases() {
        let a = SeedSplit::new(7);
        assert_eq!(a.train_seeds(10, 20), SeedSplit::new(7).train_seeds(10, 20));
        assert_eq!(a.eval_seeds(20), SeedSplit::new(7).eval_seeds(20));
        assert_ne!(a.train_seeds(0, 20), SeedSplit::new(8).train_seeds(0, 20));
        assert_eq!(a.train_seeds(10, 5)[0], a.train(10));
    }

    #[test]
    fn mix_seed_separates_streams() {
        assert_ne!(mix_seed(1, 0), mix_seed(1, 1));
        assert_ne!(mix_seed(1, 2), mix_seed(2, 1));
    }
}
