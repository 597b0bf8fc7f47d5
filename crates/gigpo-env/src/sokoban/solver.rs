//! Shortest solutions by breadth-first search.
//!
//! The search runs over states (player cell, box cells) and counts every step, move or push,
//! so the first solved state it reaches is an optimal solution in steps. Boxes pushed onto a
//! cell from which no push sequence could bring a box to any target (a "dead" cell: found once
//! per room by pulling a lone box backwards from every target) are not explored; this never
//! removes a solution.
//!
//! ```
//! use gigpo_env::sokoban::{solve, Room};
//! use gigpo_env::action::Direction;
//!
//! let room: Room = "# # # # # #\n# P X _ O #\n# # # # # #".parse().unwrap();
//! assert_eq!(solve(&room).unwrap(), Some(vec![Direction::Right, Direction::Right]));
//! ```

use std::collections::VecDeque;

use rustc_hash::FxHashSet;

use super::key::KeyPacker;
use super::room::{Room, TARGET, WALL};
use crate::action::Direction;

/// States the solver visits at most by default.
pub const DEFAULT_MAX_STATES: usize = 5_000_000;

/// Why the solver gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SolveError {
    #[error("the room is too large for the solver: {boxes} boxes in {cells} cells")]
    TooLarge { boxes: usize, cells: usize },
    #[error("the solver gave up after {0} states")]
    Limit(usize),
}

/// A shortest solution of `room` (empty when it is already solved), `None` when it has none.
pub fn solve(room: &Room) -> Result<Option<Vec<Direction>>, SolveError> {
    solve_with_limit(room, DEFAULT_MAX_STATES)
}

/// Length of a shortest solution, `None` when there is none.
pub fn solution_length(room: &Room) -> Result<Option<usize>, SolveError> {
    Ok(solve(room)?.map(|s| s.len()))
}

/// [`solve`] visiting at most `max_states` states.
pub fn solve_with_limit(
    room: &Room,
    max_states: usize,
) -> Result<Option<Vec<Direction>>, SolveError> {
    if room.is_solved() {
        return Ok(Some(Vec::new()));
    }
    let cells = room.cells();
    let boxes = room.box_indices();
    let packer = KeyPacker::new(cells.len(), boxes.len() + 1, 0).ok_or(SolveError::TooLarge {
        boxes: boxes.len(),
        cells: cells.len(),
    })?;
    let search = Bfs {
        cells,
        dead: dead_cells(room),
        offsets: Direction::ALL.map(|d| room.offset(d)),
        packer,
        num_boxes: boxes.len(),
    };
    search.run(room.player_index(), boxes, max_states)
}

struct Bfs<'a> {
    cells: &'a [u8],
    dead: Vec<bool>,
    offsets: [isize; 4],
    packer: KeyPacker,
    num_boxes: usize,
}

/// A visited state: its key, the node it came from and the step that led here.
struct Node {
    key: u128,
    parent: u32,
    step: u8,
}

impl Bfs<'_> {
    fn run(
        &self,
        player: usize,
        boxes: Vec<usize>,
        max_states: usize,
    ) -> Result<Option<Vec<Direction>>, SolveError> {
        let start = self.packer.pack(player, &boxes);
        let mut nodes = vec![Node {
            key: start,
            parent: u32::MAX,
            step: 0,
        }];
        let mut seen = FxHashSet::default();
        seen.insert(start);
        let mut queue = VecDeque::from([0u32]);
        let mut occupied = vec![false; self.cells.len()];
        let mut current = Vec::with_capacity(self.num_boxes);
        while let Some(at) = queue.pop_front() {
            let key = nodes[at as usize].key;
            let player = self.packer.field(key, 0);
            current.clear();
            current.extend((1..=self.num_boxes).map(|i| self.packer.field(key, i)));
            current.iter().for_each(|&b| occupied[b] = true);
            for (step, &off) in self.offsets.iter().enumerate() {
                let Some((next_key, solved)) = self.successor(player, &current, &occupied, off)
                else {
                    continue;
                };
                if !seen.insert(next_key) {
                    continue;
                }
                nodes.push(Node {
                    key: next_key,
                    parent: at,
                    step: step as u8,
                });
                if solved {
                    return Ok(Some(path(&nodes)));
                }
                if nodes.len() >= max_states {
                    return Err(SolveError::Limit(max_states));
                }
                queue.push_back((nodes.len() - 1) as u32);
            }
            current.iter().for_each(|&b| occupied[b] = false);
        }
        Ok(None)
    }

    /// The key of the state after one step and whether it is solved; `None` when the step is
    /// blocked or pushes a box onto a dead cell.
    fn successor(
        &self,
        player: usize,
        boxes: &[usize],
        occupied: &[bool],
        off: isize,
    ) -> Option<(u128, bool)> {
        let next = player.wrapping_add_signed(off);
        if self.cells[next] & WALL != 0 {
            return None;
        }
        if !occupied[next] {
            return Some((self.packer.pack(next, boxes), false));
        }
        let beyond = next.wrapping_add_signed(off);
        if self.cells[beyond] & WALL != 0 || occupied[beyond] || self.dead[beyond] {
            return None;
        }
        let mut moved: Vec<usize> = boxes
            .iter()
            .map(|&b| if b == next { beyond } else { b })
            .collect();
        moved.sort_unstable();
        let solved = moved.iter().all(|&b| self.cells[b] & TARGET != 0);
        Some((self.packer.pack(next, &moved), solved))
    }
}

/// The steps from the first node to the last one.
fn path(nodes: &[Node]) -> Vec<Direction> {
    let mut steps = Vec::new();
    let mut at = nodes.len() - 1;
    while nodes[at].parent != u32::MAX {
        steps.push(Direction::ALL[nodes[at].step as usize]);
        at = nodes[at].parent as usize;
    }
    steps.reverse();
    steps
}

/// Cells from which a lone box can never be pushed to a target.
fn dead_cells(room: &Room) -> Vec<bool> {
    let cells = room.cells();
    let open = |i: usize| cells[i] & WALL == 0;
    let mut live = vec![false; cells.len()];
    let mut stack: Vec<usize> = (0..cells.len())
        .filter(|&i| cells[i] & TARGET != 0)
        .collect();
    stack.iter().for_each(|&t| live[t] = true);
    let offsets = Direction::ALL.map(|d| room.offset(d));
    while let Some(b) = stack.pop() {
        // A box at `from` pushed by `off` lands on `b`; the player stands at `from - off`.
        for off in offsets {
            let from = b.wrapping_add_signed(-off);
            if live[from] || !open(from) {
                continue;
            }
            let stand = from.wrapping_add_signed(-off);
            if stand < cells.len() && open(stand) {
                live[from] = true;
                stack.push(from);
            }
        }
    }
    live.iter()
        .zip(cells)
        .map(|(&l, &c)| !l && c & WALL == 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(text: &str) -> Room {
        text.parse().unwrap()
    }

    #[test]
    fn needs_to_walk_around_the_box() {
        // The box must be pushed up, so the player first walks below it.
        let r =
            room("# # # # # #\n# _ O _ _ #\n# _ _ _ _ #\n# _ X P _ #\n# _ _ _ _ #\n# # # # # #");
        let s = solve(&r).unwrap().unwrap();
        assert_eq!(s.len(), 4, "{s:?}");
        assert_solves(&r, &s);
    }

    #[test]
    fn unsolvable_room_has_no_solution() {
        // The box sits in a corner away from the target.
        let r = room("# # # # #\n# X _ _ #\n# _ P O #\n# # # # #");
        assert_eq!(solve(&r).unwrap(), None);
    }

    #[test]
    fn two_boxes() {
        let r = room("# # # # # # #\n# O _ _ _ _ #\n# _ X _ X _ #\n# _ _ P _ O #\n# # # # # # #");
        let s = solve(&r).unwrap().unwrap();
        assert_solves(&r, &s);
    }

    #[test]
    fn dead_cells_are_corners_and_walls_edges() {
        let r = room("# # # # #\n# _ _ _ #\n# X P O #\n# # # # #");
        let dead = dead_cells(&r);
        // Corners without a target are dead; the target and the cells that reach it are not.
        assert!(dead[6] && dead[7] && dead[8] && dead[11]);
        assert!(!dead[12] && !dead[13]);
    }

    #[test]
    fn limit_is_an_error() {
        let r = room("# # # # # # #\n# O _ _ _ _ #\n# _ X _ X _ #\n# _ _ P _ O #\n# # # # # # #");
        assert_eq!(solve_with_limit(&r, 3), Err(SolveError::Limit(3)));
    }

    fn assert_solves(r: &Room, steps: &[Direction]) {
        let mut r = r.clone();
        for &d in steps {
            r.push(d);
        }
        assert!(r.is_solved(), "{r}");
    }
}
