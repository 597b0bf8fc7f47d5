//! A pool of environment instances stepped as one batch, with grouped resets.
//!
//! The pool holds `groups × group_size` environments. Environment `i` belongs to group
//! `i / group_size`; [`EnvPool::reset_groups`] resets every member of group `g` with the same
//! seed, so the members start from the same state (docs/environments.md, "The pool") and GiGPO
//! can compare them.
//!
//! **Stepping.** [`EnvPool::step`] takes the actions of some running environments and returns
//! one [`StepResult`] per action, in the same order. Environments whose `blocking_io()` is true
//! (remote ones) are stepped concurrently, one scoped thread per instance in chunks of at most
//! [`PoolConfig::max_threads`]; the others one after another on the calling thread.
//!
//! **Faults.** An `Err` from an environment's `reset` or `step` (a fault of the environment, not
//! of the agent) does not stop training: that episode ends as truncated, the result carries
//! `fault: Some(message)`, and [`EnvPool::fault_count`] goes up. A faulted step reports reward 0,
//! the last observation, and `action_valid = true` (the action was never judged). Only when one
//! environment faults [`PoolConfig::max_consecutive_faults`] times in a row (default 3, counted
//! over resets and steps, cleared by any success) does the pool return
//! [`PoolError::TooManyFaults`], naming the environment and its last message.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::env::{EnvError, Environment, Observation, StepOutcome};
pub use crate::seed::SeedSplit;
use crate::spec::EnvSpec;

/// The number of an episode group in a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId(pub usize);

/// The number of an environment instance in a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EnvIndex(pub usize);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {}", self.0)
    }
}

impl fmt::Display for EnvIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "environment {}", self.0)
    }
}

/// Settings of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Faults in a row of one environment after which the pool gives up (default 3).
    pub max_consecutive_faults: u32,
    /// Most threads stepping blocking environments at once (default 64).
    pub max_threads: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_consecutive_faults: 3,
            max_threads: 64,
        }
    }
}

/// A misuse of the pool, or an environment that keeps failing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    #[error("invalid pool: {0}")]
    Config(String),
    #[error("could not build environment {index}: {source}")]
    Build { index: usize, source: EnvError },
    #[error("expected one seed per group ({expected}), got {got}")]
    SeedCount { expected: usize, got: usize },
    #[error("{index} does not exist (the pool holds {len})")]
    OutOfRange { index: EnvIndex, len: usize },
    #[error("{index} is not running an episode")]
    NotActive { index: EnvIndex },
    #[error("{index} appears twice in one step")]
    Duplicate { index: EnvIndex },
    #[error("{index} failed {count} times in a row; last error: {message}")]
    TooManyFaults {
        index: EnvIndex,
        count: u32,
        message: String,
    },
}

/// The start of one environment's episode.
#[derive(Debug, Clone, PartialEq)]
pub struct ResetResult {
    pub index: EnvIndex,
    pub group: GroupId,
    /// The first observation; `None` when the reset faulted.
    pub observation: Option<Observation>,
    /// The environment's error message when the reset faulted (the episode is then over).
    pub fault: Option<String>,
}

/// One environment's step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    pub index: EnvIndex,
    pub outcome: StepOutcome,
    /// The environment's error message when the step faulted (then `outcome.truncated`).
    pub fault: Option<String>,
}

/// Environments stepped as one batch.
pub struct EnvPool {
    envs: Vec<Box<dyn Environment>>,
    group_size: usize,
    config: PoolConfig,
    active: Vec<bool>,
    last_observation: Vec<Option<Observation>>,
    consecutive_faults: Vec<u32>,
    faults: u64,
}

impl EnvPool {
    /// A pool of `envs.len() = groups × group_size` environments.
    pub fn new(
        envs: Vec<Box<dyn Environment>>,
        groups: usize,
        group_size: usize,
        config: PoolConfig,
    ) -> Result<Self, PoolError> {
        if groups == 0 || group_size == 0 {
            return Err(PoolError::Config(format!(
                "groups ({groups}) and group size ({group_size}) must be at least 1"
            )));
        }
        if envs.len() != groups * group_size {
            return Err(PoolError::Config(format!(
                "{} environments for {groups} groups of {group_size}",
                envs.len()
            )));
        }
        if config.max_consecutive_faults == 0 || config.max_threads == 0 {
            return Err(PoolError::Config(
                "max_consecutive_faults and max_threads must be at least 1".into(),
            ));
        }
        let n = envs.len();
        Ok(Self {
            envs,
            group_size,
            config,
            active: vec![false; n],
            last_observation: vec![None; n],
            consecutive_faults: vec![0; n],
            faults: 0,
        })
    }

    /// A pool whose environments come from `make` (called `groups × group_size` times).
    pub fn from_fn(
        groups: usize,
        group_size: usize,
        config: PoolConfig,
        mut make: impl FnMut() -> Result<Box<dyn Environment>, EnvError>,
    ) -> Result<Self, PoolError> {
        let envs = (0..groups * group_size)
            .map(|index| make().map_err(|source| PoolError::Build { index, source }))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(envs, groups, group_size, config)
    }

    /// A pool of environments built from `spec`.
    ///
    /// ```
    /// use gigpo_env::pool::{EnvPool, PoolConfig};
    ///
    /// let spec = "sokoban".parse().unwrap();
    /// let mut pool = EnvPool::from_spec(&spec, 2, 3, PoolConfig::default()).unwrap();
    /// let resets = pool.reset_groups(&[7, 8]).unwrap();
    /// // Members of a group start from the same level.
    /// assert_eq!(resets[0].observation, resets[2].observation);
    /// assert_ne!(resets[0].observation, resets[3].observation);
    /// ```
    pub fn from_spec(
        spec: &EnvSpec,
        groups: usize,
        group_size: usize,
        config: PoolConfig,
    ) -> Result<Self, PoolError> {
        Self::from_fn(groups, group_size, config, || spec.build())
    }

    /// Number of environments.
    pub fn len(&self) -> usize {
        self.envs.len()
    }

    /// Whether the pool is empty (never: a pool holds at least one environment).
    pub fn is_empty(&self) -> bool {
        self.envs.is_empty()
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.envs.len() / self.group_size
    }

    /// Environments per group.
    pub fn group_size(&self) -> usize {
        self.group_size
    }

    /// The group an environment belongs to.
    pub fn group_of(&self, index: EnvIndex) -> GroupId {
        GroupId(index.0 / self.group_size)
    }

    /// The environments of a group.
    pub fn members(&self, group: GroupId) -> impl Iterator<Item = EnvIndex> {
        let start = group.0 * self.group_size;
        (start..start + self.group_size).map(EnvIndex)
    }

    /// One environment (for its name and instructions).
    pub fn env(&self, index: EnvIndex) -> &dyn Environment {
        self.envs[index.0].as_ref()
    }

    /// Whether an environment is running an episode.
    pub fn is_active(&self, index: EnvIndex) -> bool {
        self.active.get(index.0).copied().unwrap_or(false)
    }

    /// The environments running an episode, in order.
    pub fn active(&self) -> Vec<EnvIndex> {
        (0..self.envs.len())
            .filter(|&i| self.active[i])
            .map(EnvIndex)
            .collect()
    }

    /// Whether every episode has ended.
    pub fn all_done(&self) -> bool {
        !self.active.iter().any(|&a| a)
    }

    /// The latest observation of an environment.
    pub fn observation(&self, index: EnvIndex) -> Option<&Observation> {
        self.last_observation.get(index.0).and_then(Option::as_ref)
    }

    /// Faults (errors from `reset` or `step`) since the pool was made.
    pub fn fault_count(&self) -> u64 {
        self.faults
    }

    /// Starts new episodes: every member of group `g` is reset with `seeds[g]`. Returns one
    /// result per environment, in index order.
    pub fn reset_groups(&mut self, seeds: &[u64]) -> Result<Vec<ResetResult>, PoolError> {
        if seeds.len() != self.groups() {
            return Err(PoolError::SeedCount {
                expected: self.groups(),
                got: seeds.len(),
            });
        }
        let group_size = self.group_size;
        let jobs: Vec<usize> = (0..self.envs.len()).collect();
        let results = self.call(&jobs, |env, i| env.reset(seeds[i / group_size]));
        let mut out = Vec::with_capacity(results.len());
        let mut worst = None;
        for (i, result) in jobs.into_iter().zip(results) {
            let (observation, fault) = match result {
                Ok(obs) => (Some(obs), None),
                Err(message) => (None, Some(message)),
            };
            self.active[i] = observation.is_some();
            self.last_observation[i].clone_from(&observation);
            self.record(i, fault.as_deref(), &mut worst);
            out.push(ResetResult {
                index: EnvIndex(i),
                group: GroupId(i / group_size),
                observation,
                fault,
            });
        }
        worst.map_or(Ok(out), Err)
    }

    /// Steps the named running environments with the model's output texts. Returns one result
    /// per action, in the order given.
    pub fn step(&mut self, actions: &[(EnvIndex, String)]) -> Result<Vec<StepResult>, PoolError> {
        let jobs = self.check_actions(actions)?;
        let results = self.call(&jobs, |env, k| env.step(&actions[k].1));
        let mut out = Vec::with_capacity(jobs.len());
        let mut worst = None;
        for (i, result) in jobs.into_iter().zip(results) {
            let (outcome, fault) = match result {
                Ok(outcome) => (outcome, None),
                Err(message) => (self.faulted_outcome(i), Some(message)),
            };
            self.active[i] = !outcome.done();
            self.last_observation[i] = Some(outcome.observation.clone());
            self.record(i, fault.as_deref(), &mut worst);
            out.push(StepResult {
                index: EnvIndex(i),
                outcome,
                fault,
            });
        }
        worst.map_or(Ok(out), Err)
    }

    /// The environment numbers of `actions`, after checking each is a distinct running one.
    fn check_actions(&self, actions: &[(EnvIndex, String)]) -> Result<Vec<usize>, PoolError> {
        let mut seen = vec![false; self.envs.len()];
        actions
            .iter()
            .map(|&(index, _)| {
                let i = index.0;
                if i >= self.envs.len() {
                    return Err(PoolError::OutOfRange {
                        index,
                        len: self.envs.len(),
                    });
                }
                if std::mem::replace(&mut seen[i], true) {
                    return Err(PoolError::Duplicate { index });
                }
                if !self.active[i] {
                    return Err(PoolError::NotActive { index });
                }
                Ok(i)
            })
            .collect()
    }

    fn faulted_outcome(&self, i: usize) -> StepOutcome {
        let observation = self.last_observation[i].clone().unwrap_or(Observation {
            text: String::new(),
            anchor: String::new(),
            admissible_actions: None,
        });
        StepOutcome {
            observation,
            reward: 0.0,
            terminated: false,
            truncated: true,
            won: false,
            action_valid: true,
        }
    }

    /// Counts a fault (or a success) of environment `i`; remembers the first environment that
    /// reached the limit of faults in a row.
    fn record(&mut self, i: usize, fault: Option<&str>, worst: &mut Option<PoolError>) {
        let Some(message) = fault else {
            self.consecutive_faults[i] = 0;
            return;
        };
        self.faults += 1;
        self.consecutive_faults[i] += 1;
        let count = self.consecutive_faults[i];
        if count >= self.config.max_consecutive_faults && worst.is_none() {
            *worst = Some(PoolError::TooManyFaults {
                index: EnvIndex(i),
                count,
                message: message.to_string(),
            });
        }
    }

    /// Calls `f(env, k)` for the environment `jobs[k]` of every job; blocking environments run
    /// concurrently. Results come back in job order, errors as messages.
    fn call<T: Send>(
        &mut self,
        jobs: &[usize],
        f: impl Fn(&mut dyn Environment, usize) -> Result<T, EnvError> + Sync,
    ) -> Vec<Result<T, String>> {
        let mut slots: Vec<Option<&mut Box<dyn Environment>>> =
            self.envs.iter_mut().map(Some).collect();
        let mut work: Vec<(usize, &mut Box<dyn Environment>)> = jobs
            .iter()
            .enumerate()
            .map(|(k, &i)| (k, slots[i].take().expect("distinct environments")))
            .collect();
        let mut results: Vec<Option<Result<T, String>>> = (0..jobs.len()).map(|_| None).collect();
        let (blocking, local): (Vec<_>, Vec<_>) =
            work.drain(..).partition(|(_, env)| env.blocking_io());
        for (k, env) in local {
            results[k] = Some(f(env.as_mut(), k).map_err(|e| e.to_string()));
        }
        let f = &f;
        let mut blocking = blocking;
        while !blocking.is_empty() {
            let rest = blocking.split_off(blocking.len().min(self.config.max_threads));
            std::thread::scope(|scope| {
                let handles: Vec<_> = blocking
                    .drain(..)
                    .map(|(k, env)| (k, scope.spawn(move || f(env.as_mut(), k))))
                    .collect();
                for (k, handle) in handles {
                    results[k] = Some(match handle.join() {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(panic) => {
                            Err(format!("environment panicked: {}", panic_message(&panic)))
                        }
                    });
                }
            });
            blocking = rest;
        }
        results
            .into_iter()
            .map(|r| r.expect("every job ran"))
            .collect()
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;

    /// A counter environment: the state is the seed plus the number of steps; it can be told to
    /// fail, to sleep (and claim blocking I/O), or to end after some steps.
    struct Counter {
        seed: u64,
        steps: u32,
        limit: u32,
        fail_steps: bool,
        fail_resets: bool,
        sleep: Option<Duration>,
        running_now: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }

    impl Counter {
        fn new() -> Self {
            Self {
                seed: 0,
                steps: 0,
                limit: 3,
                fail_steps: false,
                fail_resets: false,
                sleep: None,
                running_now: Arc::default(),
                peak: Arc::default(),
            }
        }

        fn obs(&self) -> Observation {
            let text = format!("{}:{}", self.seed, self.steps);
            Observation {
                anchor: text.clone(),
                text,
                admissible_actions: None,
            }
        }
    }

    impl Environment for Counter {
        fn name(&self) -> &str {
            "counter"
        }
        fn instructions(&self) -> String {
            String::new()
        }
        fn reset(&mut self, seed: u64) -> Result<Observation, EnvError> {
            if self.fail_resets {
                return Err(EnvError::Remote("connection refused".into()));
            }
            self.seed = seed;
            self.steps = 0;
            Ok(self.obs())
        }
        fn step(&mut self, action_text: &str) -> Result<StepOutcome, EnvError> {
            let now = self.running_now.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            if let Some(d) = self.sleep {
                std::thread::sleep(d);
            }
            self.running_now.fetch_sub(1, Ordering::SeqCst);
            if self.fail_steps {
                return Err(EnvError::Remote("timed out".into()));
            }
            if action_text == "panic" {
                panic!("bad action");
            }
            self.steps += 1;
            Ok(StepOutcome {
                observation: self.obs(),
                reward: 1.0,
                terminated: self.steps >= self.limit,
                truncated: false,
                won: self.steps >= self.limit,
                action_valid: true,
            })
        }
        fn blocking_io(&self) -> bool {
            self.sleep.is_some()
        }
    }

    fn pool_of(groups: usize, size: usize, make: impl Fn(usize) -> Counter) -> EnvPool {
        let envs = (0..groups * size)
            .map(|i| Box::new(make(i)) as Box<dyn Environment>)
            .collect();
        EnvPool::new(envs, groups, size, PoolConfig::default()).unwrap()
    }

    fn actions(indices: &[usize]) -> Vec<(EnvIndex, String)> {
        indices
            .iter()
            .map(|&i| (EnvIndex(i), "go".to_string()))
            .collect()
    }

    #[test]
    fn groups_share_seeds() {
        let mut pool = pool_of(3, 2, |_| Counter::new());
        let resets = pool.reset_groups(&[10, 20, 30]).unwrap();
        let texts: Vec<_> = resets
            .iter()
            .map(|r| r.observation.as_ref().unwrap().text.clone())
            .collect();
        assert_eq!(texts, ["10:0", "10:0", "20:0", "20:0", "30:0", "30:0"]);
        assert_eq!(resets[3].group, GroupId(1));
        assert_eq!(pool.group_of(EnvIndex(5)), GroupId(2));
        assert_eq!(
            pool.members(GroupId(1)).collect::<Vec<_>>(),
            [EnvIndex(2), EnvIndex(3)]
        );
        assert_eq!(pool.active().len(), 6);
    }

    #[test]
    fn steps_only_the_named_envs_and_tracks_done() {
        let mut pool = pool_of(2, 2, |i| Counter {
            limit: if i == 0 { 1 } else { 5 },
            ..Counter::new()
        });
        pool.reset_groups(&[1, 2]).unwrap();
        let out = pool.step(&actions(&[3, 0])).unwrap();
        assert_eq!(out[0].index, EnvIndex(3));
        assert_eq!(out[0].outcome.observation.text, "2:1");
        assert!(out[1].outcome.terminated);
        assert!(!pool.is_active(EnvIndex(0)) && pool.is_active(EnvIndex(1)));
        assert_eq!(pool.observation(EnvIndex(1)).unwrap().text, "1:0");
        assert!(matches!(
            pool.step(&actions(&[0])),
            Err(PoolError::NotActive { index: EnvIndex(0) })
        ));
        assert!(matches!(
            pool.step(&actions(&[1, 1])),
            Err(PoolError::Duplicate { .. })
        ));
        assert!(matches!(
            pool.step(&actions(&[9])),
            Err(PoolError::OutOfRange { .. })
        ));
        assert!(matches!(
            pool.reset_groups(&[1]),
            Err(PoolError::SeedCount { .. })
        ));
    }

    #[test]
    fn a_fault_truncates_the_episode_and_is_counted() {
        let mut pool = pool_of(1, 2, |i| Counter {
            fail_steps: i == 1,
            ..Counter::new()
        });
        pool.reset_groups(&[4]).unwrap();
        let out = pool.step(&actions(&[0, 1])).unwrap();
        assert_eq!(out[0].fault, None);
        let faulted = &out[1];
        assert_eq!(
            faulted.fault.as_deref(),
            Some("remote environment: timed out")
        );
        assert!(faulted.outcome.truncated && !faulted.outcome.terminated);
        assert_eq!(faulted.outcome.reward, 0.0);
        assert_eq!(faulted.outcome.observation.text, "4:0");
        assert_eq!(pool.fault_count(), 1);
        assert!(!pool.is_active(EnvIndex(1)) && pool.is_active(EnvIndex(0)));
    }

    #[test]
    fn repeated_faults_stop_the_pool_naming_the_env() {
        let mut pool = pool_of(2, 1, |i| Counter {
            fail_resets: i == 1,
            ..Counter::new()
        });
        for round in 1..=2 {
            let out = pool.reset_groups(&[0, 0]).unwrap();
            assert!(out[1].observation.is_none() && out[1].fault.is_some());
            assert_eq!(pool.fault_count(), round);
        }
        let err = pool.reset_groups(&[0, 0]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("environment 1") && msg.contains("3 times"),
            "{msg}"
        );
        assert!(msg.contains("connection refused"), "{msg}");
    }

    #[test]
    fn a_success_clears_the_fault_streak() {
        let mut pool = pool_of(1, 1, |_| Counter::new());
        pool.reset_groups(&[0]).unwrap();
        // Two faults, a success, two faults: never three in a row.
        for _ in 0..2 {
            pool.envs[0] = Box::new(Counter {
                fail_resets: true,
                ..Counter::new()
            });
            pool.reset_groups(&[0]).unwrap();
            pool.reset_groups(&[0]).unwrap();
            pool.envs[0] = Box::new(Counter::new());
            pool.reset_groups(&[0]).unwrap();
        }
        assert_eq!(pool.fault_count(), 4);
    }

    #[test]
    fn blocking_envs_run_concurrently_in_bounded_chunks() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let envs: Vec<Box<dyn Environment>> = (0..8)
            .map(|_| {
                Box::new(Counter {
                    sleep: Some(Duration::from_millis(100)),
                    running_now: running.clone(),
                    peak: peak.clone(),
                    ..Counter::new()
                }) as Box<dyn Environment>
            })
            .collect();
        let config = PoolConfig {
            max_threads: 4,
            ..Default::default()
        };
        let mut pool = EnvPool::new(envs, 2, 4, config).unwrap();
        pool.reset_groups(&[1, 2]).unwrap();
        let start = Instant::now();
        let out = pool.step(&actions(&[7, 6, 5, 4, 3, 2, 1, 0])).unwrap();
        let elapsed = start.elapsed();
        assert_eq!(peak.load(Ordering::SeqCst), 4);
        // Two chunks of 100 ms, not eight calls in a row.
        assert!(elapsed < Duration::from_millis(700), "{elapsed:?}");
        let order: Vec<_> = out.iter().map(|r| r.index.0).collect();
        assert_eq!(order, [7, 6, 5, 4, 3, 2, 1, 0]);
        assert_eq!(out[0].outcome.observation.text, "2:1");
    }

    #[test]
    fn a_panicking_blocking_env_is_a_fault() {
        let mut pool = pool_of(1, 2, |_| Counter {
            sleep: Some(Duration::from_millis(1)),
            ..Counter::new()
        });
        pool.reset_groups(&[0]).unwrap();
        let acts = vec![
            (EnvIndex(0), "panic".to_string()),
            (EnvIndex(1), "go".into()),
        ];
        let out = pool.step(&acts).unwrap();
        assert!(out[0].fault.as_deref().unwrap().contains("bad action"));
        assert_eq!(out[1].fault, None);
    }

    #[test]
    fn shape_is_checked() {
        let envs: Vec<Box<dyn Environment>> = vec![Box::new(Counter::new())];
        assert!(matches!(
            EnvPool::new(envs, 2, 1, PoolConfig::default()),
            Err(PoolError::Config(_))
        ));
        let err = EnvPool::from_fn(1, 2, PoolConfig::default(), || {
            Err(EnvError::Config("no such level".into()))
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("environment 0"));
    }
}
