//! Evaluation levels held out by content, and the two baselines every evaluation reports beside
//! the policy (docs/environments.md, "Evaluation levels"): a uniformly random policy over the admissible actions and the optimal
//! solver, on the same levels.
//!
//! Disjoint seed ranges do not give disjoint levels: two seeds can generate the same room. So
//! the held-out set is a set of levels, compared by their canonical state key (the initial
//! observation's anchor), and a training seed whose level is in it is replaced by another.
//!
//! ```
//! use gigpo_env::levels::HeldOut;
//! use gigpo_env::seed::SeedSplit;
//! use gigpo_env::spec::EnvSpec;
//!
//! let spec = EnvSpec::default();
//! let split = SeedSplit::new(0);
//! let held_out = HeldOut::new(&spec, split, 64).unwrap();
//! let mut env = spec.build().unwrap();
//! let seed = held_out.train_seed(env.as_mut(), 7).unwrap();
//! let key = env.reset(seed).unwrap().anchor;
//! assert!(!held_out.contains(&key));
//! ```

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashSet;

use crate::env::{EnvError, Environment};
use crate::frozenlake::FrozenLake;
use crate::seed::{mix_seed, SeedSplit, TRAIN_SEEDS};
use crate::sokoban::{solve, Sokoban};
use crate::spec::EnvSpec;

/// Replacement seeds tried for one training level before giving up.
const MAX_ATTEMPTS: u64 = 1_000;
/// Stream of the replacement seeds.
const REDRAW_STREAM: u64 = 0x7265_6472_6177; // "redraw"

/// The evaluation levels of a run: their seeds and, when levels depend on the seed, the keys
/// of their initial states.
#[derive(Debug, Clone)]
pub struct HeldOut {
    split: SeedSplit,
    seeds: Vec<u64>,
    keys: FxHashSet<String>,
}

impl HeldOut {
    /// The first `levels` evaluation seeds of `split`. For environments whose level depends on
    /// the seed ([`levels_vary_with_seed`]) each is reset once to record its level's key.
    pub fn new(spec: &EnvSpec, split: SeedSplit, levels: usize) -> Result<Self, EnvError> {
        let seeds = split.eval_seeds(levels);
        let mut keys = FxHashSet::default();
        if levels_vary_with_seed(spec) {
            let mut env = spec.build()?;
            for &s in &seeds {
                keys.insert(env.reset(s)?.anchor);
            }
        }
        Ok(Self { split, seeds, keys })
    }

    /// The evaluation seeds, one per level, in order.
    pub fn seeds(&self) -> &[u64] {
        &self.seeds
    }

    /// Whether `key` is the initial state of a held-out level.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Distinct held-out levels (0 when levels do not depend on the seed).
    pub fn distinct_levels(&self) -> usize {
        self.keys.len()
    }

    /// The seed of the `k`-th training level: the split's `k`-th training seed, or, when its
    /// level is held out, the first of a fixed sequence of replacement seeds whose level is not.
    /// `env` is any instance of the environment (it is reset to check levels).
    pub fn train_seed(&self, env: &mut dyn Environment, k: u64) -> Result<u64, EnvError> {
        let first = self.split.train(k);
        if self.keys.is_empty() {
            return Ok(first);
        }
        for attempt in 0..MAX_ATTEMPTS {
            let seed = if attempt == 0 {
                first
            } else {
                mix_seed(first ^ REDRAW_STREAM, attempt) % TRAIN_SEEDS.end
            };
            if !self.keys.contains(&env.reset(seed)?.anchor) {
                return Ok(seed);
            }
        }
        Err(EnvError::Config(format!(
            "no training level outside the {} held-out levels after {MAX_ATTEMPTS} seeds",
            self.keys.len()
        )))
    }
}

impl HeldOut {
    /// [`HeldOut::train_seed`] of each of `ks`, on a fresh instance of `spec` (built only when
    /// levels are compared).
    pub fn train_seeds(
        &self,
        spec: &EnvSpec,
        ks: impl IntoIterator<Item = u64>,
    ) -> Result<Vec<u64>, EnvError> {
        if self.keys.is_empty() {
            return Ok(ks.into_iter().map(|k| self.split.train(k)).collect());
        }
        let mut env = spec.build()?;
        ks.into_iter()
            .map(|k| self.train_seed(env.as_mut(), k))
            .collect()
    }
}

/// Whether the environment's initial state depends on the reset seed: generated Sokoban rooms
/// and random FrozenLake maps do; a level file, a fixed map or a remote environment (whose
/// levels the trainer cannot enumerate cheaply) do not count.
pub fn levels_vary_with_seed(spec: &EnvSpec) -> bool {
    match spec {
        EnvSpec::Sokoban(c) => c.level.is_none(),
        EnvSpec::FrozenLake(c) => c.level.is_none() && c.map == crate::frozenlake::LakeMap::Random,
        #[cfg(feature = "remote")]
        EnvSpec::Remote(_) => false,
    }
}

/// Share of `rollouts` episodes from `seed` won by a policy that picks uniformly among the
/// admissible actions at every step, for at most `max_steps` steps. `None` when the environment
/// does not list admissible actions or is remote (each rollout would cost round trips).
pub fn random_success(
    spec: &EnvSpec,
    seed: u64,
    max_steps: usize,
    rollouts: usize,
    rng_seed: u64,
) -> Result<Option<f64>, EnvError> {
    if spec.is_remote() || rollouts == 0 {
        return Ok(None);
    }
    let mut env = spec.build()?;
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(rng_seed, seed));
    let mut won = 0usize;
    for _ in 0..rollouts {
        let mut obs = env.reset(seed)?;
        for _ in 0..max_steps {
            let Some(actions) = obs.admissible_actions.as_deref().filter(|a| !a.is_empty()) else {
                return Ok(None);
            };
            let action = &actions[rng.random_range(0..actions.len())];
            let out = env.step(&format!("<action>{action}</action>"))?;
            if out.won {
                won += 1;
            }
            if out.done() {
                break;
            }
            obs = out.observation;
        }
    }
    Ok(Some(won as f64 / rollouts as f64))
}

/// Whether the optimal policy wins the level of `seed` within `max_steps` steps (and the
/// environment's own limit). `None` when no solver is known: remote environments and slippery
/// FrozenLake (whose optimum is not a fixed path).
pub fn optimal_success(
    spec: &EnvSpec,
    seed: u64,
    max_steps: usize,
) -> Result<Option<bool>, EnvError> {
    match spec {
        EnvSpec::Sokoban(c) => {
            let room = Sokoban::new(c.clone())?.initial_room(seed)?;
            let limit = max_steps.min(c.max_steps as usize);
            let path = solve(&room).map_err(|e| EnvError::Config(format!("sokoban: {e}")))?;
            Ok(Some(path.is_some_and(|p| p.len() <= limit)))
        }
        EnvSpec::FrozenLake(c) if !c.slippery => {
            let lake = FrozenLake::new(c.clone())?.map_for(seed)?;
            let limit = max_steps.min(c.max_steps as usize);
            Ok(Some(lake.shortest_path().is_some_and(|n| n <= limit)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sokoban::SokobanConfig;

    #[test]
    fn training_never_resets_to_a_held_out_level() {
        // The default configuration: 6×6 Sokoban, one box; the evaluation set of `gigpo eval`.
        let spec = EnvSpec::Sokoban(SokobanConfig::default());
        let split = SeedSplit::new(0);
        let held_out = HeldOut::new(&spec, split, 256).unwrap();
        assert!(held_out.distinct_levels() > 200);
        let mut env = spec.build().unwrap();
        let mut replaced = 0;
        for k in 0..20_000 {
            let seed = held_out.train_seed(env.as_mut(), k).unwrap();
            replaced += usize::from(seed != split.train(k));
            let key = env.reset(seed).unwrap().anchor;
            assert!(!held_out.contains(&key), "training level {k} is held out");
        }
        // Plain seeds do collide with evaluation levels; those were replaced.
        assert!(replaced > 0);
    }

    #[test]
    fn baselines_on_known_levels() {
        let spec = EnvSpec::Sokoban(SokobanConfig::default());
        for seed in 0..20 {
            let opt = optimal_success(&spec, seed, 15).unwrap().unwrap();
            let rnd = random_success(&spec, seed, 15, 200, 1).unwrap().unwrap();
            assert!((0.0..=1.0).contains(&rnd));
            // The random policy can only win where a solution fits the step limit.
            assert!(opt || rnd == 0.0, "seed {seed}");
        }
        // One step is too few for nearly every level.
        let one: usize = (0..50)
            .filter(|&s| optimal_success(&spec, s, 1).unwrap().unwrap())
            .count();
        assert!(one < 50);
        let a = random_success(&spec, 3, 15, 100, 7).unwrap();
        assert_eq!(a, random_success(&spec, 3, 15, 100, 7).unwrap());
    }
}
