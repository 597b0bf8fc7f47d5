//! FrozenLake as a text grid, with Gymnasium's rules.
//!
//! The agent crosses a frozen lake from the start to the goal without falling into a hole.
//!
//! - Map symbols: `S` start, `F` frozen, `H` hole, `G` goal. In the observation the agent's cell
//!   shows `P` (standing on the start or on ice), `X` (fallen into a hole) or `W` (on the goal).
//!   Cells are joined by single spaces and rows by newlines, as in Sokoban; the anchor is the
//!   same text (map plus position is the whole state).
//! - Actions `up`, `down`, `left`, `right` (Gymnasium numbers them left 0, down 1, right 2, up 3).
//!   A move off the edge leaves the agent where it is.
//! - Slippery ice (optional, Gymnasium's rule): the agent moves in the intended direction or in
//!   one of the two perpendicular ones, each with probability 1/3, drawn from the environment's
//!   random generator, which each reset seeds from the episode seed.
//! - Reward 1 on reaching the goal (terminated, `won`), 0 otherwise; falling into a hole
//!   terminates the episode (not won); after `max_steps` steps it is truncated.
//! - Output that names no action is an invalid action: nothing moves, reward 0,
//!   `action_valid = false`, and the step counts toward the limit.
//!
//! Maps: Gymnasium's standard 4×4 and 8×8 maps, a random map per seed (each cell a hole with
//! `hole_probability`, start top left, goal bottom right, redrawn until a path exists), or a
//! map file.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::action::{parse_direction, ActionFormat, Direction};
use crate::env::{EnvError, Environment, Observation, StepOutcome};
use crate::seed::mix_seed;

/// Gymnasium's 4×4 map.
pub const MAP_4X4: [&str; 4] = ["SFFF", "FHFH", "FFFH", "HFFG"];
/// Gymnasium's 8×8 map.
pub const MAP_8X8: [&str; 8] = [
    "SFFFFFFF", "FFFFFFFF", "FFFHFFFF", "FFFFFHFF", "FFFHFFFF", "FHHFFFHF", "FHFFHFHF", "FFFHFFFG",
];

/// Draws of a random map before giving up.
const MAP_ATTEMPTS: usize = 10_000;
/// Stream of the slip generator, apart from the map's.
const SLIP_STREAM: u64 = 0x736c_6970; // "slip"

/// Which map an episode is played on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LakeMap {
    /// Gymnasium's 4×4 map; the seed only drives slipping.
    #[serde(rename = "4x4")]
    Standard4x4,
    /// Gymnasium's 8×8 map; the seed only drives slipping.
    #[serde(rename = "8x8")]
    Standard8x8,
    /// A random solvable map of `size × size` per seed.
    #[serde(rename = "random")]
    Random,
}

/// Configuration of the FrozenLake environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrozenLakeConfig {
    /// `"4x4"`, `"8x8"` or `"random"` (default).
    pub map: LakeMap,
    /// Side of random maps (default 4).
    pub size: usize,
    /// Probability that a cell of a random map is a hole (default 0.2, Gymnasium's p = 0.8).
    pub hole_probability: f64,
    /// Slippery ice (default false).
    pub slippery: bool,
    /// Steps before the episode is truncated (default 20).
    pub max_steps: u32,
    /// Which model outputs count as actions (default `tagged`).
    pub action_format: ActionFormat,
    /// A map file (rows of `S F H G`); overrides `map`.
    pub level: Option<PathBuf>,
}

impl Default for FrozenLakeConfig {
    fn default() -> Self {
        Self {
            map: LakeMap::Random,
            size: 4,
            hole_probability: 0.2,
            slippery: false,
            max_steps: 20,
            action_format: ActionFormat::Tagged,
            level: None,
        }
    }
}

impl FrozenLakeConfig {
    fn validate(&self) -> Result<(), EnvError> {
        let bad = |m: String| Err(EnvError::Config(format!("frozenlake: {m}")));
        if self.max_steps == 0 {
            return bad("max_steps must be at least 1".into());
        }
        if !(2..=64).contains(&self.size) {
            return bad(format!("size must be between 2 and 64, got {}", self.size));
        }
        if !(0.0..1.0).contains(&self.hole_probability) {
            return bad(format!(
                "hole_probability must be in [0, 1), got {}",
                self.hole_probability
            ));
        }
        Ok(())
    }
}

/// One cell of the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tile {
    Start,
    Frozen,
    Hole,
    Goal,
}

impl Tile {
    fn symbol(self) -> char {
        match self {
            Self::Start => 'S',
            Self::Frozen => 'F',
            Self::Hole => 'H',
            Self::Goal => 'G',
        }
    }
}

/// A FrozenLake map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lake {
    rows: usize,
    cols: usize,
    tiles: Vec<Tile>,
    start: usize,
}

impl Lake {
    /// A map from rows of `S F H G` (cells with or without spaces between them): exactly one
    /// start, at least one goal. Errors name the line and column.
    pub fn parse(text: &str) -> Result<Self, EnvError> {
        let bad = |m: String| EnvError::Config(m);
        let mut tiles = Vec::new();
        let mut start = None;
        let (mut rows, mut cols) = (0, 0);
        for (line_no, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l)) {
            if line.trim().is_empty() {
                continue;
            }
            let before = tiles.len();
            for (col, ch) in line.chars().enumerate().filter(|(_, c)| !c.is_whitespace()) {
                let tile = match ch {
                    'S' => Tile::Start,
                    'F' => Tile::Frozen,
                    'H' => Tile::Hole,
                    'G' => Tile::Goal,
                    _ => {
                        return Err(bad(format!(
                        "line {line_no}, column {}: unknown symbol `{ch}` (expected S, F, H or G)",
                        col + 1
                    )))
                    }
                };
                if tile == Tile::Start && start.replace(tiles.len()).is_some() {
                    return Err(bad(format!(
                        "line {line_no}, column {}: a second start; a map has exactly one",
                        col + 1
                    )));
                }
                tiles.push(tile);
            }
            let found = tiles.len() - before;
            if rows == 0 {
                cols = found;
            } else if found != cols {
                return Err(bad(format!(
                    "line {line_no}: {found} cells, but the first row has {cols}"
                )));
            }
            rows += 1;
        }
        if rows == 0 {
            return Err(bad("the map is empty".into()));
        }
        let start = start.ok_or_else(|| bad("the map has no start (`S`)".into()))?;
        if !tiles.contains(&Tile::Goal) {
            return Err(bad("the map has no goal (`G`)".into()));
        }
        Ok(Self {
            rows,
            cols,
            tiles,
            start,
        })
    }

    fn from_rows(rows: &[&str]) -> Self {
        Self::parse(&rows.join("\n")).expect("built-in maps are valid")
    }

    /// A random `size × size` map with a path from the start (top left) to the goal (bottom
    /// right); each other cell is a hole with probability `hole_probability`.
    pub fn random(size: usize, hole_probability: f64, seed: u64) -> Result<Self, EnvError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = size * size;
        for _ in 0..MAP_ATTEMPTS {
            let mut tiles: Vec<Tile> = (0..n)
                .map(|_| {
                    if rng.random::<f64>() < hole_probability {
                        Tile::Hole
                    } else {
                        Tile::Frozen
                    }
                })
                .collect();
            tiles[0] = Tile::Start;
            tiles[n - 1] = Tile::Goal;
            let lake = Self {
                rows: size,
                cols: size,
                tiles,
                start: 0,
            };
            if lake.shortest_path().is_some() {
                return Ok(lake);
            }
        }
        Err(EnvError::Config(format!(
            "frozenlake: no solvable {size}×{size} map with hole probability {hole_probability} \
             for seed {seed} in {MAP_ATTEMPTS} draws"
        )))
    }

    /// Rows of the map.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the map.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The tile at (row, column).
    pub fn tile(&self, row: usize, col: usize) -> Tile {
        self.tiles[row * self.cols + col]
    }

    /// The fewest moves from the start to a goal without slipping, `None` when no path exists.
    pub fn shortest_path(&self) -> Option<usize> {
        let mut dist = vec![usize::MAX; self.tiles.len()];
        dist[self.start] = 0;
        let mut queue = VecDeque::from([self.start]);
        while let Some(at) = queue.pop_front() {
            if self.tiles[at] == Tile::Goal {
                return Some(dist[at]);
            }
            for dir in Direction::ALL {
                let next = self.neighbour(at, dir);
                if self.tiles[next] != Tile::Hole && dist[next] == usize::MAX {
                    dist[next] = dist[at] + 1;
                    queue.push_back(next);
                }
            }
        }
        None
    }

    /// The cell one move from `at`, or `at` itself at the edge.
    fn neighbour(&self, at: usize, dir: Direction) -> usize {
        let (r, c) = (at / self.cols, at % self.cols);
        let (dr, dc) = dir.delta();
        let nr = r.checked_add_signed(dr).filter(|&v| v < self.rows);
        let nc = c.checked_add_signed(dc).filter(|&v| v < self.cols);
        match (nr, nc) {
            (Some(nr), Some(nc)) => nr * self.cols + nc,
            _ => at,
        }
    }

    /// The grid text with the agent at `player`.
    pub fn render(&self, player: usize) -> String {
        let mut out = String::with_capacity(self.tiles.len() * 2);
        for (i, tile) in self.tiles.iter().enumerate() {
            if i > 0 {
                out.push(if i % self.cols == 0 { '\n' } else { ' ' });
            }
            out.push(match (i == player, tile) {
                (true, Tile::Hole) => 'X',
                (true, Tile::Goal) => 'W',
                (true, _) => 'P',
                (false, t) => t.symbol(),
            });
        }
        out
    }
}

/// Gymnasium's number of a direction: left 0, down 1, right 2, up 3.
pub fn gymnasium_action(dir: Direction) -> usize {
    match dir {
        Direction::Left => 0,
        Direction::Down => 1,
        Direction::Right => 2,
        Direction::Up => 3,
    }
}

const GYM_DIRECTIONS: [Direction; 4] = [
    Direction::Left,
    Direction::Down,
    Direction::Right,
    Direction::Up,
];

/// The FrozenLake environment.
#[derive(Debug, Clone)]
pub struct FrozenLake {
    config: FrozenLakeConfig,
    file_map: Option<Lake>,
    lake: Option<Lake>,
    player: usize,
    steps: u32,
    running: bool,
    rng: ChaCha8Rng,
}

impl FrozenLake {
    /// An environment for `config`; reads the map file when the configuration names one.
    pub fn new(config: FrozenLakeConfig) -> Result<Self, EnvError> {
        config.validate()?;
        let file_map = config.level.as_deref().map(load_map).transpose()?;
        Ok(Self {
            config,
            file_map,
            lake: None,
            player: 0,
            steps: 0,
            running: false,
            rng: ChaCha8Rng::seed_from_u64(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &FrozenLakeConfig {
        &self.config
    }

    /// The map an episode with `seed` is played on.
    pub fn map_for(&self, seed: u64) -> Result<Lake, EnvError> {
        if let Some(map) = &self.file_map {
            return Ok(map.clone());
        }
        Ok(match self.config.map {
            LakeMap::Standard4x4 => Lake::from_rows(&MAP_4X4),
            LakeMap::Standard8x8 => Lake::from_rows(&MAP_8X8),
            LakeMap::Random => Lake::random(self.config.size, self.config.hole_probability, seed)?,
        })
    }

    /// The current map (`None` before the first reset).
    pub fn lake(&self) -> Option<&Lake> {
        self.lake.as_ref()
    }

    /// Steps taken in this episode.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    fn observation(&self) -> Result<Observation, EnvError> {
        let lake = self.lake.as_ref().ok_or(EnvError::NotRunning)?;
        let text = lake.render(self.player);
        Ok(Observation {
            anchor: text.clone(),
            text,
            admissible_actions: Some(Direction::words()),
        })
    }

    /// Applies one parsed action (`None`: invalid) and returns the step's outcome.
    pub fn step_action(&mut self, action: Option<Direction>) -> Result<StepOutcome, EnvError> {
        let lake = match (&self.lake, self.running) {
            (Some(lake), true) => lake,
            _ => return Err(EnvError::NotRunning),
        };
        if let Some(intended) = action {
            let dir = if self.config.slippery {
                let a = gymnasium_action(intended);
                GYM_DIRECTIONS[(a + 3 + self.rng.random_range(0..3)) % 4]
            } else {
                intended
            };
            self.player = lake.neighbour(self.player, dir);
        }
        let tile = lake.tiles[self.player];
        self.steps += 1;
        let won = tile == Tile::Goal;
        let terminated = won || tile == Tile::Hole;
        let truncated = !terminated && self.steps >= self.config.max_steps;
        self.running = !(terminated || truncated);
        Ok(StepOutcome {
            observation: self.observation()?,
            reward: if won { 1.0 } else { 0.0 },
            terminated,
            truncated,
            won,
            action_valid: action.is_some(),
        })
    }
}

/// Reads a map file, naming the file in any error.
pub fn load_map(path: &Path) -> Result<Lake, EnvError> {
    let text = crate::gridfile::read(path, "map file")?;
    Lake::parse(&text).map_err(|e| match e {
        EnvError::Config(m) => EnvError::Config(format!("map file {}: {m}", path.display())),
        other => other,
    })
}

impl Environment for FrozenLake {
    fn name(&self) -> &str {
        "frozenlake"
    }

    fn instructions(&self) -> String {
        let slip = if self.config.slippery {
            " The ice is slippery: you may slide to one side of the direction you chose."
        } else {
            ""
        };
        format!(
            "You are walking on a frozen lake, shown as a grid: start S, frozen ice F, hole H, \
             goal G; you are P (X if you fell into a hole, W on the goal). Reach the goal \
             without stepping into a hole. Each action moves you one cell: up, down, left or \
             right; moving off the edge leaves you in place.{slip} Reward: 1 for reaching the \
             goal, 0 otherwise. You have at most {} steps. Answer with <think>your \
             reasoning</think> followed by <action>up</action>, <action>down</action>, \
             <action>left</action> or <action>right</action>.",
            self.config.max_steps
        )
    }

    fn reset(&mut self, seed: u64) -> Result<Observation, EnvError> {
        let lake = self.map_for(seed)?;
        self.player = lake.start;
        self.lake = Some(lake);
        self.steps = 0;
        self.running = true;
        self.rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, SLIP_STREAM));
        self.observation()
    }

    fn step(&mut self, action_text: &str) -> Result<StepOutcome, EnvError> {
        let action = parse_direction(action_text, self.config.action_format);
        self.step_action(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(map: LakeMap, slippery: bool, max_steps: u32) -> FrozenLake {
        FrozenLake::new(FrozenLakeConfig {
            map,
            slippery,
            max_steps,
            ..Default::default()
        })
        .unwrap()
    }

    fn act(d: &str) -> String {
        format!("<action>{d}</action>")
    }

    #[test]
    fn standard_map_renders_with_the_player() {
        let mut e = env(LakeMap::Standard4x4, false, 100);
        let obs = e.reset(0).unwrap();
        assert_eq!(obs.text, "P F F F\nF H F H\nF F F H\nH F F G");
        assert_eq!(obs.anchor, obs.text);
        let s = e.step(&act("right")).unwrap();
        assert_eq!(s.observation.text, "S P F F\nF H F H\nF F F H\nH F F G");
        assert_eq!((s.reward, s.done()), (0.0, false));
    }

    #[test]
    fn reaching_the_goal_wins() {
        let mut e = env(LakeMap::Standard4x4, false, 100);
        e.reset(0).unwrap();
        let path = ["down", "down", "right", "right", "down"];
        for d in path {
            assert_eq!(e.step(&act(d)).unwrap().reward, 0.0);
        }
        let s = e.step(&act("right")).unwrap();
        assert_eq!(s.reward, 1.0);
        assert!(s.terminated && s.won && !s.truncated);
        assert!(s.observation.text.ends_with("H F F W"));
        assert!(matches!(e.step(&act("up")), Err(EnvError::NotRunning)));
    }

    #[test]
    fn a_hole_ends_the_episode_lost() {
        let mut e = env(LakeMap::Standard4x4, false, 100);
        e.reset(0).unwrap();
        e.step(&act("down")).unwrap();
        let s = e.step(&act("right")).unwrap();
        assert!(s.terminated && !s.won && !s.truncated);
        assert_eq!(s.reward, 0.0);
        assert_eq!(s.observation.text.lines().nth(1), Some("F X F H"));
    }

    #[test]
    fn edges_invalid_actions_and_the_step_limit() {
        let mut e = env(LakeMap::Standard4x4, false, 3);
        let start = e.reset(0).unwrap();
        let s = e.step(&act("up")).unwrap();
        assert_eq!(s.observation, start);
        assert!(s.action_valid);
        let s = e.step("walk north").unwrap();
        assert!(!s.action_valid && !s.done());
        assert_eq!((s.reward, &s.observation), (0.0, &start));
        let s = e.step(&act("left")).unwrap();
        assert!(s.truncated && !s.terminated);
    }

    #[test]
    fn slipping_follows_gymnasium_and_the_seed() {
        // Gymnasium: intended, or one of the two perpendicular directions, each 1/3.
        let mut counts = std::collections::HashMap::new();
        for seed in 0..600 {
            let mut e = env(LakeMap::Standard8x8, true, 100);
            e.reset(seed).unwrap();
            // From the top-left corner, `right` can go right, down, or up (stays put).
            let s = e.step(&act("right")).unwrap();
            *counts.entry(s.observation.text.clone()).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(
            counts.values().all(|&c| (150..250).contains(&c)),
            "{counts:?}"
        );
        // Same seed, same slips.
        let run = |seed| {
            let mut e = env(LakeMap::Standard8x8, true, 100);
            e.reset(seed).unwrap();
            (0..10)
                .map(|_| {
                    e.step(&act("down"))
                        .map(|s| s.observation.text)
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
    }

    #[test]
    fn random_maps_are_solvable_and_seeded() {
        for seed in 0..200 {
            let lake = Lake::random(6, 0.3, seed).unwrap();
            assert!(lake.shortest_path().unwrap() >= 10);
            assert_eq!(lake.tile(0, 0), Tile::Start);
            assert_eq!(lake.tile(5, 5), Tile::Goal);
            assert_eq!(lake, Lake::random(6, 0.3, seed).unwrap());
        }
        assert_ne!(
            Lake::random(8, 0.2, 1).unwrap(),
            Lake::random(8, 0.2, 2).unwrap()
        );
    }

    #[test]
    fn shortest_paths_of_the_standard_maps() {
        assert_eq!(Lake::from_rows(&MAP_4X4).shortest_path(), Some(6));
        assert_eq!(Lake::from_rows(&MAP_8X8).shortest_path(), Some(14));
        assert_eq!(Lake::parse("S H\nH G").unwrap().shortest_path(), None);
    }

    #[test]
    fn map_errors_name_the_position() {
        let e = Lake::parse("SFF\nFQF\nFFG").unwrap_err().to_string();
        assert!(e.contains("line 2, column 2") && e.contains('Q'), "{e}");
        assert!(Lake::parse("FFF\nFFG")
            .unwrap_err()
            .to_string()
            .contains("no start"));
        assert!(Lake::parse("SFF\nFF")
            .unwrap_err()
            .to_string()
            .contains("line 2"));
        assert!(Lake::parse("SFF\nFFF")
            .unwrap_err()
            .to_string()
            .contains("no goal"));
        assert_eq!(Lake::parse("S F\nF G").unwrap().render(0), "P F\nF G");
    }

    #[test]
    fn config_is_checked_and_reads_from_toml() {
        let c: FrozenLakeConfig = toml::from_str("map = \"8x8\"\nslippery = true").unwrap();
        assert_eq!(
            (c.map, c.slippery, c.max_steps),
            (LakeMap::Standard8x8, true, 20)
        );
        let bad = FrozenLakeConfig {
            hole_probability: 1.0,
            ..Default::default()
        };
        let msg = FrozenLake::new(bad).unwrap_err().to_string();
        assert!(msg.contains("hole_probability"), "{msg}");
    }
}
