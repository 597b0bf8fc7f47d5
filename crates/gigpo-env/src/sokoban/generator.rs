//! Level generation by reverse play, as gym-sokoban 0.0.6 does it (docs/environments.md,
//! "Level generation").
//!
//! 1. **Topology**: a random walk of `num_gen_steps` steps over the room; at each step the
//!    direction changes with probability `p_change_directions` (0.35) and one of five 3×3 masks
//!    centred on the walker is carved into floor. The outer ring is then set back to wall.
//! 2. **Placement**: the player and then one target per box go on random floor cells.
//! 3. **Reverse play**: from the solved state (every box on its target) a depth-first search
//!    plays Sokoban backwards: the player moves, and may pull the box behind it. Of all states
//!    met, the one with the highest score is kept, where score = pulls on the path that reached
//!    it × sum of the boxes' Manhattan distances from their own targets, and a state with a
//!    covered target (a box or the player on it) scores 0. (gym-sokoban calls the first factor
//!    "box swaps"; as its code runs, every pull counts.) The search stops at depth
//!    `search_depth` (300) or after `max_explored` (300,000) distinct states, and visits states
//!    in the same order as gym-sokoban (pull up, down, left, right, then move up, down, left,
//!    right), so from the same room it keeps the same state.
//! 4. **Player walk** (as the reference GiGPO experiments add it): with probability ½ the
//!    player then walks up to 3 random steps to cells it has not visited, continuing after each
//!    step with probability ½.
//!
//! A room whose floor is too small for the player and the boxes, or whose best state scores 0,
//! is degenerate; generation then starts over from a seed derived from the level seed and the
//! attempt number, at most [`MAX_ATTEMPTS`] times. Every pull is a push played backwards, so the
//! result is always solvable. The randomness is one [`ChaCha8Rng`] per attempt, so a seed always
//! gives the same level.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use super::key::KeyPacker;
use super::room::{Room, BOX, TARGET, WALL};
use crate::seed::mix_seed;

/// Attempts before generation gives up on a seed.
pub const MAX_ATTEMPTS: u64 = 64;

/// The five carving masks of the topology walk (gym-sokoban's `room_topology_generation`).
const MASKS: [[[bool; 3]; 3]; 5] = {
    const O: bool = false;
    const I: bool = true;
    [
        [[O, O, O], [I, I, I], [O, O, O]],
        [[O, I, O], [O, I, O], [O, I, O]],
        [[O, O, O], [I, I, O], [O, I, O]],
        [[O, O, O], [I, I, O], [I, I, O]],
        [[O, O, O], [O, I, I], [O, I, O]],
    ]
};

/// Walk directions of the topology walk, as (row, column) steps.
const WALK_DIRECTIONS: [(isize, isize); 4] = [(1, 0), (0, 1), (-1, 0), (0, -1)];

/// Parameters of the generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorParams {
    /// Rows of the room, wall ring included.
    pub rows: usize,
    /// Columns of the room, wall ring included.
    pub cols: usize,
    /// Boxes (and targets).
    pub num_boxes: usize,
    /// Steps of the topology walk (gym-sokoban: ⌊1.7 × (rows + cols)⌋).
    pub num_gen_steps: usize,
    /// Probability that the topology walk changes direction at a step.
    pub p_change_directions: f64,
    /// Depth limit of the reverse-play search.
    pub search_depth: u32,
    /// Most distinct states the reverse-play search visits.
    pub max_explored: usize,
}

impl GeneratorParams {
    /// gym-sokoban's defaults for a room of the given size.
    pub fn new(rows: usize, cols: usize, num_boxes: usize) -> Self {
        Self {
            rows,
            cols,
            num_boxes,
            num_gen_steps: default_gen_steps(rows, cols),
            p_change_directions: 0.35,
            search_depth: 300,
            max_explored: 300_000,
        }
    }
}

/// gym-sokoban's number of topology-walk steps: ⌊1.7 × (rows + cols)⌋.
pub fn default_gen_steps(rows: usize, cols: usize) -> usize {
    (17 * (rows + cols)) / 10
}

/// Why no level came out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    #[error("room size {rows}×{cols} is not supported: rows and columns must be between 3 and 32")]
    Size { rows: usize, cols: usize },
    #[error("a level needs at least one box and at most 11, got {0}")]
    Boxes(usize),
    #[error("p_change_directions must be in [0, 1], got {0}")]
    Probability(f64),
    #[error(
        "no level for seed {seed} after {attempts} attempts ({rows}×{cols} room, {boxes} boxes): \
         the room is too small or too crowded"
    )]
    Exhausted {
        seed: u64,
        attempts: u64,
        rows: usize,
        cols: usize,
        boxes: usize,
    },
}

/// Checks the parameters without generating anything.
pub fn validate(params: &GeneratorParams) -> Result<(), GenerateError> {
    let side = 3..=32;
    if !side.contains(&params.rows) || !side.contains(&params.cols) {
        return Err(GenerateError::Size {
            rows: params.rows,
            cols: params.cols,
        });
    }
    if params.num_boxes == 0 || params.num_boxes > 11 {
        return Err(GenerateError::Boxes(params.num_boxes));
    }
    if !(0.0..=1.0).contains(&params.p_change_directions) {
        return Err(GenerateError::Probability(params.p_change_directions));
    }
    Ok(())
}

/// Generates the level of `seed`: always the same room for the same parameters and seed.
///
/// ```
/// use gigpo_env::sokoban::{generate_level, GeneratorParams};
///
/// let params = GeneratorParams::new(6, 6, 1);
/// let a = generate_level(&params, 7).unwrap();
/// assert_eq!(a, generate_level(&params, 7).unwrap());
/// assert_eq!((a.rows(), a.cols(), a.num_boxes()), (6, 6, 1));
/// ```
pub fn generate_level(params: &GeneratorParams, seed: u64) -> Result<Room, GenerateError> {
    validate(params)?;
    for attempt in 0..MAX_ATTEMPTS {
        let attempt_seed = if attempt == 0 {
            seed
        } else {
            mix_seed(seed, attempt)
        };
        let mut rng = ChaCha8Rng::seed_from_u64(attempt_seed);
        if let Some(room) = try_generate(params, &mut rng) {
            return Ok(room);
        }
    }
    Err(GenerateError::Exhausted {
        seed,
        attempts: MAX_ATTEMPTS,
        rows: params.rows,
        cols: params.cols,
        boxes: params.num_boxes,
    })
}

/// One attempt; `None` when the room is degenerate.
fn try_generate(params: &GeneratorParams, rng: &mut ChaCha8Rng) -> Option<Room> {
    let (rows, cols) = (params.rows, params.cols);
    let floor = topology(params, rng);
    let (player, targets) = place(&floor, params.num_boxes, rng)?;
    let mut cells: Vec<u8> = floor.iter().map(|&f| if f { 0 } else { WALL }).collect();
    for &t in &targets {
        cells[t] |= TARGET | BOX;
    }
    let solved = Room::from_parts(rows, cols, cells, player);
    let best = reverse_play(&solved, params.search_depth, params.max_explored);
    if best.score == 0 {
        return None;
    }
    Some(walk_player(best.room, rng))
}

/// Carves the floor by the random walk; `true` marks floor.
fn topology(params: &GeneratorParams, rng: &mut ChaCha8Rng) -> Vec<bool> {
    let (rows, cols) = (params.rows as isize, params.cols as isize);
    let mut floor = vec![false; params.rows * params.cols];
    let mut direction = WALK_DIRECTIONS[rng.random_range(0..4)];
    let mut pos = (
        rng.random_range(1..params.rows) as isize,
        rng.random_range(1..params.cols) as isize,
    );
    for _ in 0..params.num_gen_steps {
        if rng.random::<f64>() < params.p_change_directions {
            direction = WALK_DIRECTIONS[rng.random_range(0..4)];
        }
        pos.0 = (pos.0 + direction.0).clamp(1, rows - 2);
        pos.1 = (pos.1 + direction.1).clamp(1, cols - 2);
        let mask = &MASKS[rng.random_range(0..MASKS.len())];
        for (dr, mask_row) in mask.iter().enumerate() {
            for (dc, &on) in mask_row.iter().enumerate() {
                if on {
                    let r = (pos.0 - 1) as usize + dr;
                    let c = (pos.1 - 1) as usize + dc;
                    floor[r * params.cols + c] = true;
                }
            }
        }
    }
    for r in 0..params.rows {
        for c in 0..params.cols {
            if r == 0 || c == 0 || r == params.rows - 1 || c == params.cols - 1 {
                floor[r * params.cols + c] = false;
            }
        }
    }
    floor
}

/// Puts the player and the targets on floor cells; `None` when the floor is too small
/// (gym-sokoban requires more floor cells than player and boxes together).
fn place(floor: &[bool], num_boxes: usize, rng: &mut ChaCha8Rng) -> Option<(usize, Vec<usize>)> {
    let mut free: Vec<usize> = (0..floor.len()).filter(|&i| floor[i]).collect();
    if free.len() <= num_boxes + 1 {
        return None;
    }
    let player = free.remove(rng.random_range(0..free.len()));
    let targets = (0..num_boxes)
        .map(|_| free.remove(rng.random_range(0..free.len())))
        .collect();
    Some((player, targets))
}

/// The state kept by [`reverse_play`] and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct ReversePlay {
    /// The most scrambled room found.
    pub room: Room,
    /// Its score: pulls × total box displacement; 0 when no state with every target uncovered
    /// was reached by a pull.
    pub score: u64,
}

/// Plays backwards from `solved` (every box on a target) and keeps the most scrambled state
/// (see the module documentation).
///
/// # Panics
/// When `solved` has a box off target or is too large to search (more than 11 boxes in
/// 1,024 cells): both are excluded by [`validate`] for generated rooms.
pub fn reverse_play(solved: &Room, search_depth: u32, max_explored: usize) -> ReversePlay {
    assert!(solved.is_solved(), "reverse play starts from a solved room");
    let mut search = ReverseSearch::new(solved, max_explored);
    search.dfs(0, i64::from(search_depth));
    let (player, boxes) = search.best;
    let mut cells: Vec<u8> = solved.cells().iter().map(|&c| c & !BOX).collect();
    for b in boxes {
        cells[b] |= BOX;
    }
    ReversePlay {
        room: Room::from_parts(solved.rows(), solved.cols(), cells, player),
        score: search.best_score.max(0) as u64,
    }
}

/// The depth-first search of reverse play, with undo instead of copies.
struct ReverseSearch<'a> {
    fixed: &'a [u8],
    cols: usize,
    occupied: Vec<bool>,
    targets: Vec<usize>,
    boxes: Vec<usize>,
    /// gym-sokoban marks a box it has pulled at least once differently in its state, so its
    /// search tells such states apart; so does this one.
    pulled: Vec<bool>,
    player: usize,
    offsets: [isize; 4],
    packer: KeyPacker,
    explored: FxHashSet<u128>,
    max_explored: usize,
    best_score: i64,
    best: (usize, Vec<usize>),
    scratch: Vec<usize>,
}

impl<'a> ReverseSearch<'a> {
    fn new(solved: &'a Room, max_explored: usize) -> Self {
        let cols = solved.cols();
        let targets = solved.box_indices();
        let packer = KeyPacker::new(solved.cells().len(), targets.len() + 1, 1)
            .expect("room small enough to search");
        let mut occupied = vec![false; solved.cells().len()];
        for &t in &targets {
            occupied[t] = true;
        }
        Self {
            fixed: solved.cells(),
            cols,
            occupied,
            boxes: targets.clone(),
            pulled: vec![false; targets.len()],
            player: solved.player_index(),
            offsets: [-(cols as isize), cols as isize, -1, 1],
            packer,
            explored: FxHashSet::default(),
            max_explored,
            best_score: -1,
            best: (solved.player_index(), targets.clone()),
            scratch: Vec::with_capacity(targets.len()),
            targets,
        }
    }

    fn key(&mut self) -> u128 {
        self.scratch.clear();
        self.scratch.extend(
            self.boxes
                .iter()
                .zip(&self.pulled)
                .map(|(&b, &p)| (b << 1) | usize::from(p)),
        );
        self.scratch.sort_unstable();
        self.packer.pack(self.player << 1, &self.scratch)
    }

    fn score(&self, pulls: u64) -> i64 {
        let covered =
            self.fixed[self.player] & TARGET != 0 || self.targets.iter().any(|&t| self.occupied[t]);
        if covered {
            return 0;
        }
        let displacement: usize = self
            .boxes
            .iter()
            .zip(&self.targets)
            .map(|(&b, &t)| manhattan(b, t, self.cols))
            .sum();
        (pulls as i64) * displacement as i64
    }

    fn dfs(&mut self, pulls: u64, ttl: i64) {
        let ttl = ttl - 1;
        if ttl <= 0 || self.explored.len() >= self.max_explored {
            return;
        }
        let key = self.key();
        if self.explored.contains(&key) {
            return;
        }
        let score = self.score(pulls);
        if score > self.best_score {
            self.best_score = score;
            self.best = (self.player, self.boxes.clone());
        }
        self.explored.insert(key);
        for action in 0..8 {
            let off = self.offsets[action % 4];
            let old = self.player;
            let next = old.wrapping_add_signed(off);
            if self.fixed[next] & WALL != 0 || self.occupied[next] {
                continue; // gym-sokoban's move does nothing: the same, explored state
            }
            self.player = next;
            let behind = old.wrapping_add_signed(-off);
            let pulled = if action < 4 && self.occupied[behind] {
                Some(self.pull(behind, old))
            } else {
                None
            };
            self.dfs(pulls + u64::from(pulled.is_some()), ttl);
            if let Some((i, was_pulled)) = pulled {
                self.occupied[old] = false;
                self.occupied[behind] = true;
                self.boxes[i] = behind;
                self.pulled[i] = was_pulled;
            }
            self.player = old;
        }
    }

    /// Moves the box at `from` to `to`; returns its number and whether it had been pulled.
    fn pull(&mut self, from: usize, to: usize) -> (usize, bool) {
        let i = self
            .boxes
            .iter()
            .position(|&b| b == from)
            .expect("an occupied cell holds a box");
        self.occupied[from] = false;
        self.occupied[to] = true;
        self.boxes[i] = to;
        let was = std::mem::replace(&mut self.pulled[i], true);
        (i, was)
    }
}

fn manhattan(a: usize, b: usize, cols: usize) -> usize {
    (a / cols).abs_diff(b / cols) + (a % cols).abs_diff(b % cols)
}

/// Walks the player 0–3 random steps over free cells it has not visited.
fn walk_player(room: Room, rng: &mut ChaCha8Rng) -> Room {
    const MOVE_PROBABILITY: f64 = 0.5;
    const CONTINUE_PROBABILITY: f64 = 0.5;
    const MAX_STEPS: usize = 3;
    if rng.random::<f64>() > MOVE_PROBABILITY {
        return room;
    }
    let cols = room.cols() as isize;
    let cells = room.cells();
    let mut player = room.player_index();
    let mut visited = vec![player];
    for _ in 0..MAX_STEPS {
        let moves: Vec<usize> = [-cols, cols, -1, 1]
            .iter()
            .map(|&off| player.wrapping_add_signed(off))
            .filter(|&n| cells[n] & (WALL | BOX) == 0 && !visited.contains(&n))
            .collect();
        if moves.is_empty() {
            break;
        }
        player = moves[rng.random_range(0..moves.len())];
        visited.push(player);
        if rng.random::<f64>() > CONTINUE_PROBABILITY {
            break;
        }
    }
    Room::from_parts(room.rows(), room.cols(), cells.to_vec(), player)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_level_other_seed_other_level() {
        let params = GeneratorParams::new(6, 6, 1);
        let a = generate_level(&params, 11).unwrap();
        assert_eq!(a, generate_level(&params, 11).unwrap());
        let differing = (12..30)
            .filter(|&s| generate_level(&params, s).unwrap() != a)
            .count();
        assert!(differing >= 15, "only {differing} of 18 seeds differ");
    }

    #[test]
    fn generated_rooms_are_well_formed() {
        let params = GeneratorParams::new(7, 7, 2);
        for seed in 0..40 {
            let room = generate_level(&params, seed).unwrap();
            assert_eq!(room.num_boxes(), 2);
            assert_eq!(room.boxes_on_target(), 0, "seed {seed}:\n{room}");
            // Wall ring and a readable text form.
            assert_eq!(Room::parse(&room.to_text()).unwrap(), room);
        }
    }

    #[test]
    fn reverse_play_scrambles_a_corridor() {
        // One box in a corridor: the best state pulls the box as far as possible from its
        // target and leaves the player off the target.
        let solved = Room::parse("# # # # # # # #\n# _ _ P √ _ _ #\n# # # # # # # #").unwrap();
        let best = reverse_play(&solved, 300, 300_000);
        // The player can only walk left, pulling the box two cells.
        assert_eq!(
            best.room.to_text(),
            "# # # # # # # #\n# P X _ O _ _ #\n# # # # # # # #"
        );
        assert_eq!(best.score, 2 * 2);
    }

    #[test]
    fn reverse_play_without_room_to_pull_scores_zero() {
        let solved = Room::parse("# # # # #\n# P √ _ #\n# # # # #").unwrap();
        assert_eq!(reverse_play(&solved, 300, 300_000).score, 0);
    }

    #[test]
    fn bad_params_are_errors() {
        let mut p = GeneratorParams::new(2, 6, 1);
        assert!(matches!(
            generate_level(&p, 0),
            Err(GenerateError::Size { .. })
        ));
        p = GeneratorParams::new(6, 6, 0);
        assert!(matches!(
            generate_level(&p, 0),
            Err(GenerateError::Boxes(0))
        ));
        p = GeneratorParams::new(6, 6, 1);
        p.p_change_directions = 1.5;
        assert!(matches!(
            generate_level(&p, 0),
            Err(GenerateError::Probability(_))
        ));
    }

    #[test]
    fn impossible_rooms_give_up_with_an_error() {
        // A 3×3 room has one floor cell: never room for a player and a box.
        let p = GeneratorParams::new(3, 3, 1);
        let err = generate_level(&p, 5).unwrap_err();
        assert!(matches!(err, GenerateError::Exhausted { seed: 5, .. }));
        assert!(err.to_string().contains("seed 5"));
    }
}
