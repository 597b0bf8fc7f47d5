//! Action parsing shared by environments: `<think>…</think><action>…</action>`.
//!
//! The model answers with free text. The environment takes the action from inside the
//! `<action>…</action>` tags (docs/environments.md, "Action format"); text it cannot read is an invalid action, reported as
//! `None`, never as an error.
//!
//! Rules, in order:
//! 1. Tags are matched without regard to ASCII case (`<ACTION>` works). Of several complete
//!    `<action>…</action>` pairs the **last** one counts; an opening tag repeated before its
//!    closing tag is superseded by the later one (`<action><action>up</action>` reads `up`).
//! 2. The text between the tags, trimmed of whitespace, must be exactly one of the
//!    environment's action words, compared without regard to case. Anything else inside the
//!    tags (`move up`, `up.`, an empty pair) is invalid.
//! 3. With [`ActionFormat::TaggedOrBare`], output with no complete tag pair is also accepted
//!    when the whole output, trimmed, is one action word (`"Left"`).
//!
//! The `<think>` part is not required: models are rewarded for reasoning, not forced to.
//!
//! ```
//! use gigpo_env::action::{parse_direction, ActionFormat, Direction};
//!
//! let out = "<think>the box is left of me</think><action>Left</action>";
//! assert_eq!(parse_direction(out, ActionFormat::Tagged), Some(Direction::Left));
//! assert_eq!(parse_direction("left", ActionFormat::Tagged), None);
//! assert_eq!(parse_direction("left", ActionFormat::TaggedOrBare), Some(Direction::Left));
//! ```

use serde::{Deserialize, Serialize};

const OPEN_TAG: &[u8] = b"<action>";
const CLOSE_TAG: &[u8] = b"</action>";

/// Which answers an environment reads as actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionFormat {
    /// The action must stand inside `<action>…</action>` (docs/environments.md, "Action format").
    #[default]
    Tagged,
    /// Tagged, or the whole output is one bare action word (for small models that were never
    /// taught the tags).
    TaggedOrBare,
}

impl std::str::FromStr for ActionFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "tagged" => Ok(Self::Tagged),
            "tagged_or_bare" => Ok(Self::TaggedOrBare),
            other => Err(format!(
                "unknown action format `{other}` (expected `tagged` or `tagged_or_bare`)"
            )),
        }
    }
}

/// One of the four moves of the grid environments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
    Left,
    Right,
}

impl Direction {
    /// All four, in the order `up, down, left, right` (gym-sokoban's push actions 1–4).
    pub const ALL: [Direction; 4] = [Self::Up, Self::Down, Self::Left, Self::Right];

    /// The action word: `up`, `down`, `left` or `right`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Left => "left",
            Self::Right => "right",
        }
    }

    /// The action word as a direction, without regard to case or surrounding whitespace.
    pub fn from_word(word: &str) -> Option<Self> {
        let w = word.trim();
        Self::ALL
            .into_iter()
            .find(|d| w.eq_ignore_ascii_case(d.as_str()))
    }

    /// Row and column change of one move (rows grow downwards).
    pub fn delta(self) -> (isize, isize) {
        match self {
            Self::Up => (-1, 0),
            Self::Down => (1, 0),
            Self::Left => (0, -1),
            Self::Right => (0, 1),
        }
    }

    /// The action words of all four directions, as an environment lists its admissible actions.
    pub fn words() -> Vec<String> {
        Self::ALL.iter().map(|d| d.as_str().to_string()).collect()
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text inside the last complete `<action>…</action>` pair, trimmed, or `None` when the
/// output holds no complete pair.
pub fn tagged_action(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut last: Option<(usize, usize)> = None;
    let mut open: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        if starts_with_ignore_case(&bytes[i..], OPEN_TAG) {
            open = Some(i + OPEN_TAG.len());
            i += OPEN_TAG.len();
        } else if starts_with_ignore_case(&bytes[i..], CLOSE_TAG) {
            if let Some(start) = open.take() {
                last = Some((start, i));
            }
            i += CLOSE_TAG.len();
        } else {
            i += 1;
        }
    }
    // The tags are ASCII, so both ends fall on character boundaries.
    last.map(|(start, end)| text[start..end].trim())
}

/// The candidate action text of a model's output under `format`: the tagged action, or with
/// [`ActionFormat::TaggedOrBare`] and no tags, the whole trimmed output.
pub fn extract_action(text: &str, format: ActionFormat) -> Option<&str> {
    match (tagged_action(text), format) {
        (Some(action), _) => Some(action),
        (None, ActionFormat::Tagged) => None,
        (None, ActionFormat::TaggedOrBare) => Some(text.trim()),
    }
}

/// The index in `choices` of the action the output names (case-insensitive), or `None`.
pub fn parse_choice(text: &str, format: ActionFormat, choices: &[&str]) -> Option<usize> {
    let action = extract_action(text, format)?;
    choices.iter().position(|c| action.eq_ignore_ascii_case(c))
}

/// The direction the output names, or `None` for an invalid action.
pub fn parse_direction(text: &str, format: ActionFormat) -> Option<Direction> {
    extract_action(text, format).and_then(Direction::from_word)
}

fn starts_with_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len() && haystack[..needle.len()].eq_ignore_ascii_case(needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(text: &str) -> Option<Direction> {
        parse_direction(text, ActionFormat::Tagged)
    }

    fn bare(text: &str) -> Option<Direction> {
        parse_direction(text, ActionFormat::TaggedOrBare)
    }

    #[test]
    fn full_format_parses() {
        let out = "<think>push the box up</think><action>up</action>";
        assert_eq!(tagged(out), Some(Direction::Up));
        assert_eq!(bare(out), Some(Direction::Up));
    }

    #[test]
    fn every_direction_and_casing() {
        for d in Direction::ALL {
            for word in [
                d.as_str().to_string(),
                d.as_str().to_uppercase(),
                capitalise(d.as_str()),
            ] {
                assert_eq!(tagged(&format!("<action>{word}</action>")), Some(d));
                assert_eq!(bare(&word), Some(d));
            }
        }
    }

    fn capitalise(s: &str) -> String {
        let mut c = s.chars();
        let first = c.next().unwrap().to_uppercase().collect::<String>();
        first + c.as_str()
    }

    #[test]
    fn tags_are_case_insensitive_and_whitespace_is_trimmed() {
        assert_eq!(tagged("<ACTION> Down \n</Action>"), Some(Direction::Down));
        assert_eq!(tagged("<Action>\tright\t</ACTION>"), Some(Direction::Right));
    }

    #[test]
    fn extra_text_around_tags_is_fine() {
        let out =
            "Sure! Let me think.\n<think>go left</think>\nMy answer: <action>left</action> done.";
        assert_eq!(tagged(out), Some(Direction::Left));
    }

    #[test]
    fn extra_text_inside_tags_is_invalid() {
        assert_eq!(tagged("<action>move up</action>"), None);
        assert_eq!(tagged("<action>up.</action>"), None);
        assert_eq!(tagged("<action>up down</action>"), None);
        assert_eq!(tagged("<action></action>"), None);
        assert_eq!(tagged("<action>upward</action>"), None);
    }

    #[test]
    fn missing_tags_are_invalid_when_tagged() {
        assert_eq!(tagged("up"), None);
        assert_eq!(tagged("<think>up</think>"), None);
        assert_eq!(tagged(""), None);
        assert_eq!(tagged("<action>up"), None);
        assert_eq!(tagged("up</action>"), None);
        assert_eq!(tagged("<action up</action>"), None);
    }

    #[test]
    fn bare_word_needs_whole_output() {
        assert_eq!(bare("  Left \n"), Some(Direction::Left));
        assert_eq!(bare("I go left"), None);
        assert_eq!(bare("left left"), None);
        assert_eq!(bare(""), None);
        // A broken tag pair is not a bare word either.
        assert_eq!(bare("<action>left"), None);
    }

    #[test]
    fn last_complete_pair_wins() {
        let out = "<action>up</action> on second thought <action>down</action>";
        assert_eq!(tagged(out), Some(Direction::Down));
        // A trailing unfinished pair does not override the last complete one.
        assert_eq!(
            tagged("<action>left</action><action>ri"),
            Some(Direction::Left)
        );
        // A repeated opening tag is superseded by the later one.
        assert_eq!(
            tagged("<action><action>right</action>"),
            Some(Direction::Right)
        );
        // A stray closing tag after a pair is ignored.
        assert_eq!(tagged("<action>up</action></action>"), Some(Direction::Up));
    }

    #[test]
    fn invalid_last_pair_is_invalid_even_after_a_valid_one() {
        assert_eq!(tagged("<action>up</action><action>jump</action>"), None);
    }

    #[test]
    fn non_ascii_text_is_handled() {
        assert_eq!(
            tagged("<think>向左推箱子 √ ü</think><action>left</action>"),
            Some(Direction::Left)
        );
        assert_eq!(tagged("<action>左</action>"), None);
        assert_eq!(bare("ｕｐ"), None);
        // Non-ASCII right next to the tags.
        assert_eq!(tagged("é<action>up</action>é"), Some(Direction::Up));
        // A Kelvin sign or dotted I must not be lowered into ASCII.
        assert_eq!(tagged("<actİon>up</actİon>"), None);
    }

    #[test]
    fn very_long_output_is_parsed_in_one_pass() {
        let filler = "<".repeat(1_000_000) + &"lorem ipsum ".repeat(100_000);
        let out = format!("{filler}<action>down</action>");
        assert_eq!(tagged(&out), Some(Direction::Down));
        let unbalanced = "<action>".repeat(200_000) + "up" + &"</action>".repeat(200_000);
        assert_eq!(tagged(&unbalanced), Some(Direction::Up));
        let no_close = "<action>".repeat(200_000);
        assert_eq!(tagged(&no_close), None);
    }

    #[test]
    fn parse_choice_finds_the_index() {
        let choices = ["north", "south"];
        assert_eq!(
            parse_choice("<action>SOUTH</action>", ActionFormat::Tagged, &choices),
            Some(1)
        );
        assert_eq!(
            parse_choice("north", ActionFormat::TaggedOrBare, &choices),
            Some(0)
        );
        assert_eq!(
            parse_choice("east", ActionFormat::TaggedOrBare, &choices),
            None
        );
    }

    #[test]
    fn action_format_from_str() {
        assert_eq!("tagged".parse::<ActionFormat>(), Ok(ActionFormat::Tagged));
        assert_eq!(
            "tagged-or-bare".parse::<ActionFormat>(),
            Ok(ActionFormat::TaggedOrBare)
        );
        assert!("bare".parse::<ActionFormat>().unwrap_err().contains("bare"));
    }
}
