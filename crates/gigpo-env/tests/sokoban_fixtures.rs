//! Golden agreement with gym-sokoban 0.0.6: every fixture written by
//! python/make_sokoban_fixtures.py is replayed here and must agree exactly (rewards compared as
//! floating-point numbers with `==`, observations as text).

use std::path::PathBuf;

use gigpo_env::sokoban::{reverse_play, Room, Sokoban, SokobanConfig};
use gigpo_env::Environment;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    source: String,
    kind: String,
    cases: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Episode {
    name: String,
    max_steps: u32,
    room: String,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    action: String,
    reward: f64,
    done: bool,
    terminated: bool,
    truncated: bool,
    won: bool,
    observation: String,
}

#[derive(Deserialize)]
struct ReverseCase {
    name: String,
    solved: String,
    best: String,
    score: u64,
}

fn fixture_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("sokoban_") && name.ends_with(".json")
        })
        .collect();
    files.sort();
    files
}

fn load(path: &PathBuf) -> Fixture {
    let text = std::fs::read_to_string(path).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert_eq!(fixture.source, "gym-sokoban 0.0.6", "{}", path.display());
    assert!(!fixture.cases.is_empty(), "{}", path.display());
    fixture
}

fn replay_episode(case: Episode) {
    let config = SokobanConfig {
        max_steps: case.max_steps,
        ..Default::default()
    };
    let room: Room = case.room.parse().unwrap();
    let mut env = Sokoban::with_level(config, room).unwrap();
    let first = env.reset(0).unwrap();
    assert_eq!(first.text, case.room, "{}", case.name);
    let last = case.steps.len() - 1;
    for (t, want) in case.steps.iter().enumerate() {
        let got = env.step(&want.action).unwrap();
        let at = format!("{} step {t} ({})", case.name, want.action);
        assert_eq!(got.reward, want.reward, "{at}");
        assert_eq!(got.observation.text, want.observation, "{at}");
        assert_eq!(got.terminated, want.terminated, "{at}");
        assert_eq!(got.truncated, want.truncated, "{at}");
        assert_eq!(got.won, want.won, "{at}");
        assert_eq!(got.done(), want.done, "{at}");
        assert_eq!(
            got.action_valid,
            want.action != "<action>jump</action>",
            "{at}"
        );
        assert!(
            !want.done || t == last,
            "{at}: gym-sokoban ended before the last action"
        );
    }
}

#[test]
fn episodes_agree_with_gym_sokoban() {
    let mut episodes = 0;
    let mut steps = 0;
    let (mut wins, mut truncations, mut on, mut off) = (0, 0, 0, 0);
    for path in fixture_files() {
        let fixture = load(&path);
        if fixture.kind != "episodes" {
            continue;
        }
        for value in fixture.cases {
            let case: Episode = serde_json::from_value(value).unwrap();
            episodes += 1;
            steps += case.steps.len();
            for s in &case.steps {
                wins += usize::from(s.won);
                truncations += usize::from(s.truncated);
                on += usize::from(s.reward == 0.9 || s.reward == 10.9);
                off += usize::from(s.reward == -1.1);
            }
            replay_episode(case);
        }
    }
    // The fixtures cover the cases that matter.
    assert!(
        episodes >= 30 && steps >= 300,
        "{episodes} episodes, {steps} steps"
    );
    assert!(wins >= 5 && truncations >= 5 && on >= 5 && off >= 3);
}

#[test]
fn reverse_play_keeps_the_same_state_as_gym_sokoban() {
    let mut cases = 0;
    for path in fixture_files() {
        let fixture = load(&path);
        if fixture.kind != "reverse_play" {
            continue;
        }
        for value in fixture.cases {
            let case: ReverseCase = serde_json::from_value(value).unwrap();
            let solved: Room = case.solved.parse().unwrap();
            let got = reverse_play(&solved, 300, 300_000);
            assert_eq!(got.score, case.score, "{}", case.name);
            assert_eq!(got.room.to_text(), case.best, "{}", case.name);
            cases += 1;
        }
    }
    assert!(cases >= 20);
}
