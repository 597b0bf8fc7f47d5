//! Sokoban, with the rules of gym-sokoban 0.0.6 (docs/environments.md, "Sokoban").
//!
//! - Actions `up`, `down`, `left`, `right` (gym-sokoban's push actions 1–4): the player moves one
//!   cell; a box in the way is pushed when the cell beyond it is floor or an empty target, else
//!   the move fails. A move into a wall fails. A failed move still costs a step.
//! - Reward of a step: −0.1; +1 more when a box lands on a target, −1 when one leaves a target
//!   (by the count of boxes on targets before and after the step); +10 more when every box is on
//!   a target, which terminates the episode with `won = true`. The terms are added in this order,
//!   as gym-sokoban adds them, so the floating-point sums agree exactly.
//! - After `max_steps` steps the episode is truncated (unless that step solved the room: then it
//!   is terminated and won). gym-sokoban ends both cases with one `done` flag.
//! - Output that names no action is an invalid action: the room does not change,
//!   `action_valid = false`, the reward is −0.1, and the step counts toward the limit.
//! - Observation text: the room grid ([`Room`] describes the symbols); the anchor is the same
//!   text (it is the whole state); admissible actions: the four directions.
//!
//! Levels come from [`generate_level`] (by seed) or from a level file.

mod generator;
mod key;
mod room;
mod solver;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use generator::{
    default_gen_steps, generate_level, reverse_play, validate, GenerateError, GeneratorParams,
    ReversePlay, MAX_ATTEMPTS,
};
pub use room::{LevelError, MoveKind, Room, MAX_SIDE};
pub use solver::{solution_length, solve, solve_with_limit, SolveError, DEFAULT_MAX_STATES};

use crate::action::{parse_direction, ActionFormat, Direction};
use crate::env::{EnvError, Environment, Observation, StepOutcome};

/// Reward of every step (gym-sokoban's `penalty_for_step`).
pub const STEP_PENALTY: f64 = -0.1;
/// Extra reward when a box lands on a target (`reward_box_on_target`).
pub const BOX_ON_TARGET: f64 = 1.0;
/// Extra reward when a box leaves a target (`penalty_box_off_target`).
pub const BOX_OFF_TARGET: f64 = -1.0;
/// Extra reward when every box is on a target (`reward_finished`).
pub const FINISHED: f64 = 10.0;

/// Configuration of the Sokoban environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SokobanConfig {
    /// Room size as `[rows, columns]`, wall ring included (default `[6, 6]`).
    pub dim_room: [usize; 2],
    /// Boxes in a generated room (default 1).
    pub num_boxes: usize,
    /// Steps before the episode is truncated (default 15).
    pub max_steps: u32,
    /// Which model outputs count as actions (default `tagged`).
    pub action_format: ActionFormat,
    /// Steps of the topology walk (default ⌊1.7 × (rows + columns)⌋, as gym-sokoban).
    pub num_gen_steps: Option<usize>,
    /// Depth limit of the reverse-play search (default 300, as gym-sokoban).
    pub search_depth: u32,
    /// A level file (the observation grid). When set, every episode starts from this level,
    /// the seed is not used, and `dim_room` and `num_boxes` are ignored.
    pub level: Option<PathBuf>,
}

impl Default for SokobanConfig {
    fn default() -> Self {
        Self {
            dim_room: [6, 6],
            num_boxes: 1,
            max_steps: 15,
            action_format: ActionFormat::Tagged,
            num_gen_steps: None,
            search_depth: 300,
            level: None,
        }
    }
}

impl SokobanConfig {
    /// The generator parameters of this configuration.
    pub fn generator_params(&self) -> GeneratorParams {
        let [rows, cols] = self.dim_room;
        let mut params = GeneratorParams::new(rows, cols, self.num_boxes);
        if let Some(steps) = self.num_gen_steps {
            params.num_gen_steps = steps;
        }
        params.search_depth = self.search_depth;
        params
    }

    fn validate(&self) -> Result<(), EnvError> {
        if self.max_steps == 0 {
            return Err(EnvError::Config(
                "sokoban: max_steps must be at least 1".into(),
            ));
        }
        if self.level.is_none() {
            validate(&self.generator_params())
                .map_err(|e| EnvError::Config(format!("sokoban: {e}")))?;
        }
        Ok(())
    }
}

/// Reads a level file, naming the file in any error (see [`crate::gridfile::read`]).
pub fn load_level(path: &std::path::Path) -> Result<Room, EnvError> {
    let text = crate::gridfile::read(path, "level file")?;
    let room = Room::parse(&text)
        .and_then(|room| room.check_playable().map(|()| room))
        .map_err(|e| EnvError::Config(format!("level file {}: {e}", path.display())))?;
    Ok(room)
}

/// What one step did, without the observation (see [`Sokoban::step_action`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub reward: f64,
    pub terminated: bool,
    pub truncated: bool,
    pub won: bool,
    pub action_valid: bool,
}

/// The Sokoban environment.
#[derive(Debug, Clone)]
pub struct Sokoban {
    config: SokobanConfig,
    params: GeneratorParams,
    level: Option<Room>,
    room: Option<Room>,
    steps: u32,
    running: bool,
}

impl Sokoban {
    /// An environment for `config`; reads the level file when the configuration names one.
    pub fn new(config: SokobanConfig) -> Result<Self, EnvError> {
        config.validate()?;
        let level = config.level.as_deref().map(load_level).transpose()?;
        Ok(Self {
            params: config.generator_params(),
            config,
            level,
            room: None,
            steps: 0,
            running: false,
        })
    }

    /// An environment that always starts from `level` (its `level` path, if any, is not read).
    pub fn with_level(config: SokobanConfig, level: Room) -> Result<Self, EnvError> {
        level
            .check_playable()
            .map_err(|e| EnvError::Config(format!("sokoban level: {e}")))?;
        let config = SokobanConfig {
            level: None,
            ..config
        };
        let mut env = Self::new(config)?;
        env.level = Some(level);
        Ok(env)
    }

    /// The configuration.
    pub fn config(&self) -> &SokobanConfig {
        &self.config
    }

    /// The current room (`None` before the first reset).
    pub fn room(&self) -> Option<&Room> {
        self.room.as_ref()
    }

    /// Steps taken in this episode.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The level an episode with `seed` starts from.
    pub fn initial_room(&self, seed: u64) -> Result<Room, EnvError> {
        match &self.level {
            Some(level) => Ok(level.clone()),
            None => generate_level(&self.params, seed)
                .map_err(|e| EnvError::Config(format!("sokoban: {e}"))),
        }
    }

    /// Starts an episode without building an observation.
    pub fn reset_room(&mut self, seed: u64) -> Result<&Room, EnvError> {
        let room = self.initial_room(seed)?;
        self.steps = 0;
        self.running = true;
        Ok(self.room.insert(room))
    }

    /// Applies one parsed action (`None`: an invalid action) without building an observation.
    pub fn step_action(&mut self, action: Option<Direction>) -> Result<Transition, EnvError> {
        let room = match (&mut self.room, self.running) {
            (Some(room), true) => room,
            _ => return Err(EnvError::NotRunning),
        };
        let before = room.boxes_on_target();
        if let Some(dir) = action {
            room.push(dir);
        }
        let after = room.boxes_on_target();
        let mut reward = STEP_PENALTY;
        if after > before {
            reward += BOX_ON_TARGET;
        } else if after < before {
            reward += BOX_OFF_TARGET;
        }
        let won = room.is_solved();
        if won {
            reward += FINISHED;
        }
        self.steps += 1;
        let truncated = !won && self.steps >= self.config.max_steps;
        self.running = !(won || truncated);
        Ok(Transition {
            reward,
            terminated: won,
            truncated,
            won,
            action_valid: action.is_some(),
        })
    }

    /// The observation of the current room.
    pub fn observation(&self) -> Result<Observation, EnvError> {
        let room = self.room.as_ref().ok_or(EnvError::NotRunning)?;
        let text = room.to_text();
        Ok(Observation {
            anchor: text.clone(),
            text,
            admissible_actions: Some(Direction::words()),
        })
    }
}

impl Environment for Sokoban {
    fn name(&self) -> &str {
        "sokoban"
    }

    fn instructions(&self) -> String {
        format!(
            "You are playing Sokoban. The room is a grid: wall #, floor _, target O, box X, \
             box on target √, you P, you on a target S. Your goal is to push every box onto a \
             target. Each action moves you one cell: up, down, left or right. Walking into a box \
             pushes it one cell if the cell beyond is floor or an empty target; you cannot pull \
             boxes or walk through walls. Rewards: -0.1 per step, +1 when a box reaches a \
             target, -1 when a box leaves a target, +10 when all boxes are on targets. You have \
             at most {} steps. Answer with <think>your reasoning</think> followed by \
             <action>up</action>, <action>down</action>, <action>left</action> or \
             <action>right</action>.",
            self.config.max_steps
        )
    }

    fn reset(&mut self, seed: u64) -> Result<Observation, EnvError> {
        self.reset_room(seed)?;
        self.observation()
    }

    fn step(&mut self, action_text: &str) -> Result<StepOutcome, EnvError> {
        let action = parse_direction(action_text, self.config.action_format);
        let t = self.step_action(action)?;
        Ok(StepOutcome {
            observation: self.observation()?,
            reward: t.reward,
            terminated: t.terminated,
            truncated: t.truncated,
            won: t.won,
            action_valid: t.action_valid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEVEL: &str =
        "# # # # # #\n# _ _ O _ #\n# _ X _ _ #\n# _ P _ _ #\n# _ _ _ _ #\n# # # # # #";

    fn env_with(level: &str, max_steps: u32) -> Sokoban {
        let config = SokobanConfig {
            max_steps,
            ..Default::default()
        };
        let mut env = Sokoban::with_level(config, level.parse().unwrap()).unwrap();
        env.reset(0).unwrap();
        env
    }

    fn act(d: &str) -> String {
        format!("<think>…</think><action>{d}</action>")
    }

    #[test]
    fn solving_pays_the_bonus() {
        let mut env = env_with(LEVEL, 15);
        for d in ["up", "left", "up"] {
            let s = env.step(&act(d)).unwrap();
            assert_eq!((s.reward, s.done(), s.action_valid), (-0.1, false, true));
        }
        let s = env.step(&act("right")).unwrap();
        assert_eq!(s.reward, -0.1 + 1.0 + 10.0);
        assert!(s.terminated && s.won && !s.truncated && s.action_valid);
        let want = "# # # # # #\n# _ P √ _ #\n# _ _ _ _ #\n# _ _ _ _ #\n# _ _ _ _ #\n# # # # # #";
        assert_eq!(s.observation.text, want);
        assert_eq!(s.observation.anchor, s.observation.text);
        assert!(matches!(env.step(&act("up")), Err(EnvError::NotRunning)));
    }

    #[test]
    fn invalid_action_keeps_the_state_and_counts() {
        let mut env = env_with(LEVEL, 2);
        let before = env.room().unwrap().clone();
        let s = env.step("I think up").unwrap();
        assert!(!s.action_valid && !s.done());
        assert_eq!(s.reward, -0.1);
        assert_eq!(env.room().unwrap(), &before);
        let s = env.step("<action>jump</action>").unwrap();
        assert!(s.truncated && !s.terminated && !s.won && !s.action_valid);
    }

    #[test]
    fn step_limit_truncates() {
        let mut env = env_with(LEVEL, 3);
        for i in 1..=3 {
            let s = env.step(&act("down")).unwrap();
            assert_eq!(s.truncated, i == 3);
            assert!(!s.terminated);
        }
    }

    #[test]
    fn win_on_the_last_step_is_terminated_not_truncated() {
        let mut env = env_with("# # # # #\n# P X O #\n# # # # #", 1);
        let s = env.step(&act("right")).unwrap();
        assert!(s.terminated && s.won && !s.truncated);
    }

    #[test]
    fn step_before_reset_is_an_error() {
        let mut env = Sokoban::new(SokobanConfig::default()).unwrap();
        assert!(matches!(env.step("up"), Err(EnvError::NotRunning)));
    }

    #[test]
    fn generated_reset_is_deterministic() {
        let mut a = Sokoban::new(SokobanConfig::default()).unwrap();
        let mut b = Sokoban::new(SokobanConfig::default()).unwrap();
        assert_eq!(a.reset(3).unwrap(), b.reset(3).unwrap());
        let obs = a.reset(3).unwrap();
        assert_eq!(
            obs.admissible_actions.unwrap(),
            ["up", "down", "left", "right"]
        );
        assert_eq!(obs.text.lines().count(), 6);
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad = SokobanConfig {
            max_steps: 0,
            ..Default::default()
        };
        assert!(Sokoban::new(bad)
            .unwrap_err()
            .to_string()
            .contains("max_steps"));
        let bad = SokobanConfig {
            dim_room: [2, 9],
            ..Default::default()
        };
        assert!(Sokoban::new(bad).unwrap_err().to_string().contains("2×9"));
        let missing = SokobanConfig {
            level: Some("/nonexistent/level.txt".into()),
            ..Default::default()
        };
        let msg = Sokoban::new(missing).unwrap_err().to_string();
        assert!(msg.contains("/nonexistent/level.txt"), "{msg}");
    }

    #[test]
    fn level_file_errors_name_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.txt");
        std::fs::write(&path, "# # # #\n# P ? #\n# X O #\n# # # #\n").unwrap();
        let msg = load_level(&path).unwrap_err().to_string();
        assert!(
            msg.contains("bad.txt") && msg.contains("line 2, column 5"),
            "{msg}"
        );
        std::fs::write(&path, LEVEL).unwrap();
        assert_eq!(load_level(&path).unwrap().to_text(), LEVEL);
    }

    #[test]
    fn config_reads_from_toml_with_defaults() {
        let c: SokobanConfig = toml::from_str("dim_room = [7, 7]\nnum_boxes = 2").unwrap();
        assert_eq!(c.dim_room, [7, 7]);
        assert_eq!(c.num_boxes, 2);
        assert_eq!(c.max_steps, 15);
        let e = toml::from_str::<SokobanConfig>("boxes = 2").unwrap_err();
        assert!(e.to_string().contains("boxes"));
    }
}
