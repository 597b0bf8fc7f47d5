//! A Sokoban room: the grid, its text form, and the push rule of gym-sokoban 0.0.6.
//!
//! The grid is one flat byte per cell holding three flags (wall, target, box); the player is a
//! cell index. A room always has a ring of walls, so a move never leaves the grid.
//!
//! Text form (docs/environments.md, "Sokoban"): wall `#`, floor `_`, target `O`, box `X`, box on
//! target `√`, player `P`, player on target `S`; cells joined by single spaces, rows by newlines.
//!
//! ```
//! use gigpo_env::sokoban::Room;
//! use gigpo_env::action::Direction;
//!
//! let mut room: Room = "# # # # #\n# P X O #\n# # # # #".parse().unwrap();
//! assert_eq!(room.push(Direction::Right), gigpo_env::sokoban::MoveKind::Pushed);
//! assert_eq!(room.to_text(), "# # # # #\n# _ P √ #\n# # # # #");
//! assert!(room.is_solved());
//! ```

use std::fmt;

use crate::action::Direction;

/// Cell flag: a wall.
pub(crate) const WALL: u8 = 1;
/// Cell flag: a box target.
pub(crate) const TARGET: u8 = 2;
/// Cell flag: a box.
pub(crate) const BOX: u8 = 4;

/// The most rows or columns a room may have.
pub const MAX_SIDE: usize = 255;

/// What one move did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    /// The move failed: a wall, or a box that cannot be pushed, was in the way.
    Blocked,
    /// The player walked to an empty cell.
    Moved,
    /// The player pushed a box one cell.
    Pushed,
}

/// Why a level text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    #[error("the level is empty")]
    Empty,
    #[error(
        "line {line}, column {column}: unknown symbol `{symbol}` (expected one of # _ O X √ P S)"
    )]
    BadSymbol {
        line: usize,
        column: usize,
        symbol: char,
    },
    #[error("line {line}: {found} cells, but the first row has {expected}")]
    Ragged {
        line: usize,
        found: usize,
        expected: usize,
    },
    #[error("the level is {rows}×{cols}; rows and columns must be between 3 and {MAX_SIDE}")]
    Size { rows: usize, cols: usize },
    #[error("line {line}, column {column}: the outer ring of the level must be walls (`#`), found `{symbol}`")]
    OpenBorder {
        line: usize,
        column: usize,
        symbol: char,
    },
    #[error("the level has no player (`P` or `S`)")]
    NoPlayer,
    #[error("line {line}, column {column}: a second player; a level has exactly one")]
    SecondPlayer { line: usize, column: usize },
    #[error("the level has no boxes")]
    NoBoxes,
    #[error("the level has {boxes} boxes but {targets} targets; the counts must be equal")]
    BoxTargetMismatch { boxes: usize, targets: usize },
    #[error("every box is already on a target")]
    AlreadySolved,
}

/// A Sokoban room with its movable parts.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Room {
    rows: usize,
    cols: usize,
    cells: Vec<u8>,
    player: usize,
    num_boxes: usize,
    on_target: usize,
}

impl Room {
    /// Builds a room from its parts; `cells` holds the flags of every cell, row by row.
    pub(crate) fn from_parts(rows: usize, cols: usize, cells: Vec<u8>, player: usize) -> Self {
        debug_assert_eq!(cells.len(), rows * cols);
        let num_boxes = cells.iter().filter(|&&c| c & BOX != 0).count();
        let on_target = cells
            .iter()
            .filter(|&&c| c & (BOX | TARGET) == BOX | TARGET)
            .count();
        Self {
            rows,
            cols,
            cells,
            player,
            num_boxes,
            on_target,
        }
    }

    /// Reads a level from its text form (the observation grid). Cells may be separated by
    /// whitespace or written next to each other; blank lines around the grid are ignored.
    pub fn parse(text: &str) -> Result<Self, LevelError> {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
            .skip_while(|(_, l)| l.trim().is_empty())
            .collect();
        let end = lines
            .iter()
            .rposition(|(_, l)| !l.trim().is_empty())
            .map_or(0, |p| p + 1);
        let lines = &lines[..end];
        if lines.is_empty() {
            return Err(LevelError::Empty);
        }
        let mut symbols: Vec<(usize, usize, char)> = Vec::new();
        let mut cols = 0;
        for (row, (line_no, line)) in lines.iter().enumerate() {
            let before = symbols.len();
            for (col, ch) in line.chars().enumerate() {
                if !ch.is_whitespace() {
                    symbols.push((*line_no, col + 1, ch));
                }
            }
            let found = symbols.len() - before;
            if row == 0 {
                cols = found;
            } else if found != cols {
                return Err(LevelError::Ragged {
                    line: *line_no,
                    found,
                    expected: cols,
                });
            }
        }
        let rows = lines.len();
        if !(3..=MAX_SIDE).contains(&rows) || !(3..=MAX_SIDE).contains(&cols) {
            return Err(LevelError::Size { rows, cols });
        }
        Self::from_symbols(rows, cols, &symbols)
    }

    fn from_symbols(
        rows: usize,
        cols: usize,
        symbols: &[(usize, usize, char)],
    ) -> Result<Self, LevelError> {
        let mut cells = Vec::with_capacity(rows * cols);
        let mut player = None;
        for (i, &(line, column, symbol)) in symbols.iter().enumerate() {
            let (flags, is_player) = match symbol {
                '#' => (WALL, false),
                '_' => (0, false),
                'O' => (TARGET, false),
                'X' => (BOX, false),
                '√' => (BOX | TARGET, false),
                'P' => (0, true),
                'S' => (TARGET, true),
                _ => {
                    return Err(LevelError::BadSymbol {
                        line,
                        column,
                        symbol,
                    })
                }
            };
            let (r, c) = (i / cols, i % cols);
            let border = r == 0 || c == 0 || r == rows - 1 || c == cols - 1;
            if border && flags != WALL {
                return Err(LevelError::OpenBorder {
                    line,
                    column,
                    symbol,
                });
            }
            if is_player {
                if player.is_some() {
                    return Err(LevelError::SecondPlayer { line, column });
                }
                player = Some(i);
            }
            cells.push(flags);
        }
        let player = player.ok_or(LevelError::NoPlayer)?;
        let room = Self::from_parts(rows, cols, cells, player);
        let targets = room.cells.iter().filter(|&&c| c & TARGET != 0).count();
        if room.num_boxes == 0 {
            return Err(LevelError::NoBoxes);
        }
        if room.num_boxes != targets {
            return Err(LevelError::BoxTargetMismatch {
                boxes: room.num_boxes,
                targets,
            });
        }
        Ok(room)
    }

    /// Checks that the room is a puzzle still to solve: some box is off target.
    pub fn check_playable(&self) -> Result<(), LevelError> {
        if self.is_solved() {
            return Err(LevelError::AlreadySolved);
        }
        Ok(())
    }

    /// Number of rows, wall ring included.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns, wall ring included.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of boxes (equal to the number of targets).
    pub fn num_boxes(&self) -> usize {
        self.num_boxes
    }

    /// Number of boxes standing on a target.
    pub fn boxes_on_target(&self) -> usize {
        self.on_target
    }

    /// All boxes are on targets.
    pub fn is_solved(&self) -> bool {
        self.on_target == self.num_boxes
    }

    /// The player's cell as (row, column).
    pub fn player(&self) -> (usize, usize) {
        (self.player / self.cols, self.player % self.cols)
    }

    pub(crate) fn player_index(&self) -> usize {
        self.player
    }

    pub(crate) fn cells(&self) -> &[u8] {
        &self.cells
    }

    /// Cells of the boxes, as flat indices in row-major order.
    pub(crate) fn box_indices(&self) -> Vec<usize> {
        (0..self.cells.len())
            .filter(|&i| self.cells[i] & BOX != 0)
            .collect()
    }

    /// The flat-index offset of one move.
    #[inline]
    pub(crate) fn offset(&self, dir: Direction) -> isize {
        match dir {
            Direction::Up => -(self.cols as isize),
            Direction::Down => self.cols as isize,
            Direction::Left => -1,
            Direction::Right => 1,
        }
    }

    /// Moves the player one cell, pushing a box when one is in the way and the cell beyond it
    /// is floor or an empty target (gym-sokoban 0.0.6, push actions 1–4). A move into a wall or
    /// into a box that cannot move fails and leaves the room unchanged.
    #[inline]
    pub fn push(&mut self, dir: Direction) -> MoveKind {
        let off = self.offset(dir);
        // The wall ring keeps the player off the border, so `next` is inside the grid, and a box
        // is never on the border either, so `beyond` is inside whenever `next` holds a box.
        let next = self.player.wrapping_add_signed(off);
        let here = self.cells[next];
        if here & WALL != 0 {
            return MoveKind::Blocked;
        }
        if here & BOX == 0 {
            self.player = next;
            return MoveKind::Moved;
        }
        let beyond = next.wrapping_add_signed(off);
        let there = self.cells[beyond];
        if there & (WALL | BOX) != 0 {
            return MoveKind::Blocked;
        }
        self.cells[next] = here & !BOX;
        self.cells[beyond] = there | BOX;
        self.on_target =
            self.on_target + usize::from(there & TARGET != 0) - usize::from(here & TARGET != 0);
        self.player = next;
        MoveKind::Pushed
    }

    /// The symbol of one cell (row-major flat index).
    #[inline]
    pub fn symbol(&self, index: usize) -> char {
        let c = self.cells[index];
        if index == self.player {
            return if c & TARGET != 0 { 'S' } else { 'P' };
        }
        match c {
            WALL => '#',
            0 => '_',
            TARGET => 'O',
            BOX => 'X',
            _ => '√',
        }
    }

    /// Appends the text form to `out`.
    pub fn write_text(&self, out: &mut String) {
        out.reserve(self.cells.len() * 2 + 2 * self.num_boxes);
        for r in 0..self.rows {
            if r > 0 {
                out.push('\n');
            }
            for c in 0..self.cols {
                if c > 0 {
                    out.push(' ');
                }
                out.push(self.symbol(r * self.cols + c));
            }
        }
    }

    /// The text form: the observation grid.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.write_text(&mut s);
        s
    }
}

impl std::str::FromStr for Room {
    type Err = LevelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Room(\n{}\n)", self.to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEVEL: &str =
        "# # # # # #\n# _ _ O _ #\n# _ X _ _ #\n# _ P _ _ #\n# _ _ _ _ #\n# # # # # #";

    #[test]
    fn text_round_trips() {
        let room = Room::parse(LEVEL).unwrap();
        assert_eq!(room.to_text(), LEVEL);
        assert_eq!((room.rows(), room.cols()), (6, 6));
        assert_eq!(room.player(), (3, 2));
        assert_eq!(room.num_boxes(), 1);
        assert_eq!(room.boxes_on_target(), 0);
    }

    #[test]
    fn compact_rows_and_blank_lines_are_accepted() {
        let compact = "\n######\n#__O_#\n#_X__#\n#_P__#\n#____#\n######\n\n";
        assert_eq!(Room::parse(compact).unwrap().to_text(), LEVEL);
        let crlf = LEVEL.replace('\n', "\r\n");
        assert_eq!(Room::parse(&crlf).unwrap().to_text(), LEVEL);
    }

    #[test]
    fn all_symbols_read_back() {
        let text = "# # # # #\n# S √ X #\n# _ _ _ #\n# # # # #";
        let room = Room::parse(text).unwrap();
        assert_eq!(room.to_text(), text);
        assert_eq!(room.boxes_on_target(), 1);
        assert_eq!(room.num_boxes(), 2);
    }

    #[test]
    fn bad_symbol_names_line_and_column() {
        let text = "# # # #\n# P q #\n# X O #\n# # # #";
        assert_eq!(
            Room::parse(text).unwrap_err(),
            LevelError::BadSymbol {
                line: 2,
                column: 5,
                symbol: 'q'
            }
        );
        let msg = Room::parse(text).unwrap_err().to_string();
        assert!(
            msg.contains("line 2, column 5") && msg.contains('q'),
            "{msg}"
        );
    }

    #[test]
    fn level_errors() {
        let cases = [
            ("", LevelError::Empty),
            ("# # # #\n# _ _ #\n# X O #\n# # # #", LevelError::NoPlayer),
            (
                "# # # #\n# P P #\n# X O #\n# # # #",
                LevelError::SecondPlayer { line: 2, column: 5 },
            ),
            ("# # # #\n# P _ #\n# _ _ #\n# # # #", LevelError::NoBoxes),
            (
                "# # # #\n# P X #\n# X O #\n# # # #",
                LevelError::BoxTargetMismatch {
                    boxes: 2,
                    targets: 1,
                },
            ),
            (
                "# # # #\n# P _\n# # # #",
                LevelError::Ragged {
                    line: 2,
                    found: 3,
                    expected: 4,
                },
            ),
            (
                "# # # #\n_ P X O\n# # # #",
                LevelError::OpenBorder {
                    line: 2,
                    column: 1,
                    symbol: '_',
                },
            ),
            ("# #\n# #", LevelError::Size { rows: 2, cols: 2 }),
        ];
        for (text, want) in cases {
            assert_eq!(Room::parse(text).unwrap_err(), want, "{text}");
        }
        let solved = Room::parse("# # # #\n# P √ #\n# # # #").unwrap();
        assert_eq!(solved.check_playable(), Err(LevelError::AlreadySolved));
        assert_eq!(Room::parse(LEVEL).unwrap().check_playable(), Ok(()));
    }

    #[test]
    fn push_rules() {
        // Push onto the target.
        let mut room = Room::parse(LEVEL).unwrap();
        assert_eq!(room.push(Direction::Up), MoveKind::Pushed);
        assert_eq!(room.player(), (2, 2));
        assert_eq!(room.push(Direction::Left), MoveKind::Moved);
        assert_eq!(room.push(Direction::Left), MoveKind::Blocked);
        assert_eq!(room.player(), (2, 1));
        // A box against the wall cannot move.
        let mut room = Room::parse("# # # #\n# X P #\n# O _ #\n# # # #").unwrap();
        assert_eq!(room.push(Direction::Left), MoveKind::Blocked);
        // A box against a box cannot move.
        let mut room = Room::parse("# # # # # #\n# P X X _ #\n# O O _ _ #\n# # # # # #").unwrap();
        assert_eq!(room.push(Direction::Right), MoveKind::Blocked);
        assert_eq!(room.player(), (1, 1));
        // Pushing onto and off a target keeps the count.
        let mut room = Room::parse("# # # # # #\n# P X O _ #\n# # # # # #").unwrap();
        assert_eq!(room.push(Direction::Right), MoveKind::Pushed);
        assert!(room.is_solved());
        assert_eq!(room.to_text(), "# # # # # #\n# _ P √ _ #\n# # # # # #");
        assert_eq!(room.push(Direction::Right), MoveKind::Pushed);
        assert_eq!(room.boxes_on_target(), 0);
        assert_eq!(room.to_text(), "# # # # # #\n# _ _ S X #\n# # # # # #");
    }
}
