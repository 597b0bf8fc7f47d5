//! The environment interface every environment implements, built-in or remote.
//!
//! Semantics follow Gymnasium (docs/environments.md, "The interface"): `reset(seed)` starts an
//! episode and returns the first observation; `step(action_text)` applies the model's raw
//! output and returns the next observation, the reward, and whether the episode ended. The trait is object-safe so the
//! trainer holds `Box<dyn Environment>` whatever is behind it.

use serde::{Deserialize, Serialize};

/// What the agent sees after a reset or a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The text shown to the model.
    pub text: String,
    /// The environment's canonical state key, without history (docs/advantages.md, "The input").
    /// Two observations with equal anchors are the same state for step grouping. Environments that have no better key
    /// use the observation text.
    pub anchor: String,
    /// The actions the environment accepts in this state, when it can list them.
    pub admissible_actions: Option<Vec<String>>,
}

/// The result of one `step`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepOutcome {
    pub observation: Observation,
    /// The environment's own reward for this step (the trainer adds the invalid-action penalty).
    pub reward: f64,
    /// The episode reached a terminal state (goal reached, agent fell in a hole, ...).
    pub terminated: bool,
    /// The episode was cut off (step limit, environment fault) before a terminal state.
    pub truncated: bool,
    /// The task was accomplished.
    pub won: bool,
    /// The action text could be parsed into an action this environment understands.
    pub action_valid: bool,
}

impl StepOutcome {
    /// Whether the episode is over, for either reason.
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// A fault of the environment itself (not of the agent's action, which is never an error).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnvError {
    /// `step` was called with no episode running, or after it ended.
    #[error("step called before reset or after the episode ended")]
    NotRunning,
    /// A level or configuration the environment cannot use.
    #[error("invalid environment configuration: {0}")]
    Config(String),
    /// A remote environment failed: timeout, closed connection, error reply, bad message.
    #[error("remote environment: {0}")]
    Remote(String),
    /// Input/output failure (reading a level file, ...).
    #[error("{0}")]
    Io(String),
}

/// One environment instance. One episode runs at a time.
pub trait Environment: Send {
    /// A short name, e.g. `sokoban`.
    fn name(&self) -> &str;

    /// Instructions for the agent: the task, the rules and the allowed actions. The trainer puts
    /// them at the top of every prompt.
    fn instructions(&self) -> String;

    /// Start a new episode. The same seed gives the same initial state.
    fn reset(&mut self, seed: u64) -> Result<Observation, EnvError>;

    /// Apply the model's raw output text. Unparseable output is an invalid action
    /// (`action_valid = false`), never an error.
    fn step(&mut self, action_text: &str) -> Result<StepOutcome, EnvError>;

    /// True when calls wait on input/output (remote environments): the pool then runs the calls of
    /// many instances concurrently instead of one after another.
    fn blocking_io(&self) -> bool {
        false
    }
}
