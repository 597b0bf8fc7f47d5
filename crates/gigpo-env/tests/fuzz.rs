//! Fuzzing the readers of untrusted text in this crate with arbitrary and near-valid input:
//! level and map files, the protocol's messages in both directions, and the stdio server's
//! line framing (with the `remote` feature). Every input must give a value or an error, never a
//! panic.
//!
//! `GIGPO_FUZZ_CASES` sets the cases per target (default 256); `.ci/run` runs many more.

use gigpo_env::frozenlake::Lake;
use gigpo_env::sokoban::{Room, Sokoban, SokobanConfig};
use gigpo_env::Environment;
use proptest::prelude::*;

#[path = "../../gigpo-core/tests/support/fuzz_config.rs"]
mod fuzz_config;

/// Text mostly made of the grid's symbols, so that the parser gets past its first checks.
fn grid_text() -> impl Strategy<Value = String> {
    let symbol = prop_oneof![
        8 => proptest::sample::select(vec![
            '#', '_', 'O', 'X', '√', 'P', 'S', ' ', '\n', 'F', 'H', 'G', '\r', '\t',
        ]),
        1 => any::<char>(),
    ];
    proptest::collection::vec(symbol, 0..200).prop_map(|c| c.into_iter().collect())
}

/// A walled room with random inside cells: often a valid level.
fn room_text() -> impl Strategy<Value = String> {
    (3usize..9, 3usize..9).prop_flat_map(|(rows, cols)| {
        let inside = proptest::sample::select(vec!['_', '_', '_', 'O', 'X', 'P', '√', 'S', '#']);
        proptest::collection::vec(inside, rows * cols).prop_map(move |cells| {
            let mut text = String::new();
            for r in 0..rows {
                for c in 0..cols {
                    let border = r == 0 || c == 0 || r == rows - 1 || c == cols - 1;
                    text.push(if border { '#' } else { cells[r * cols + c] });
                    text.push(' ');
                }
                text.push('\n');
            }
            text
        })
    })
}

fn play_level(room: Room) {
    if let Ok(mut env) = Sokoban::with_level(SokobanConfig::default(), room) {
        if env.reset(0).is_err() {
            return;
        }
        for action in ["<action>up</action>", "left", "<action>right</action>", "x"] {
            if env.step(action).is_err() {
                break;
            }
        }
    }
}

proptest! {
    #![proptest_config(fuzz_config::config())]

    #[test]
    fn level_and_map_text(text in grid_text()) {
        if let Ok(room) = Room::parse(&text) {
            let _ = room.to_text();
            play_level(room);
        }
        if let Ok(lake) = Lake::parse(&text) {
            let _ = (lake.shortest_path(), lake.render(0));
        }
    }

    #[test]
    fn walled_rooms(text in room_text()) {
        if let Ok(room) = Room::parse(&text) {
            play_level(room);
        }
    }
}

/// The protocol's messages in both directions and the stdio server's line framing.
#[cfg(feature = "remote")]
mod protocol {
    use super::fuzz_config;
    use gigpo_env::remote::protocol::{FieldNames, Framed, ServerMessage};
    use gigpo_env::remote::server::{decode_client_message, serve_stdio, EnvFactory};
    use gigpo_env::Environment;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// JSON-ish text: fragments of real messages spliced with arbitrary characters.
    fn message_text() -> impl Strategy<Value = String> {
        let fragment = proptest::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"type\"",
            "\"data\"",
            "\"reset\"",
            "\"step\"",
            "\"state\"",
            "\"close\"",
            "\"error\"",
            "\"observation\"",
            "\"health\"",
            "\"metadata\"",
            "\"seed\"",
            "\"action\"",
            "\"text\"",
            "\"anchor\"",
            "\"reward\"",
            "\"done\"",
            "\"won\"",
            "\"truncated\"",
            "\"admissible_actions\"",
            "\"id\"",
            "\"code\"",
            "\"message\"",
            "null",
            "true",
            "false",
            "0",
            "-1",
            "1e999",
            "18446744073709551616",
            "\"x\"",
            "\"\\u0000\"",
            "\"\\ud800\"",
        ]);
        let piece = prop_oneof![
            6 => fragment.prop_map(str::to_string),
            1 => any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    fn read_server_message(text: &str) {
        if let Ok(ServerMessage::Observation { data }) = serde_json::from_str::<ServerMessage>(text)
        {
            let _ = FieldNames::default().decode(&data);
        }
        let _ = serde_json::from_str::<Framed<ServerMessage>>(text);
    }

    fn lake_factory() -> EnvFactory {
        Arc::new(|| {
            let env = gigpo_env::frozenlake::FrozenLake::new(Default::default())?;
            Ok(Box::new(env) as Box<dyn Environment>)
        })
    }

    proptest! {
        #![proptest_config(fuzz_config::config())]

        #[test]
        fn protocol_messages(text in prop_oneof![message_text(), any::<String>()]) {
            let _ = decode_client_message(&text);
            read_server_message(&text);
        }

        #[test]
        fn stdio_server_input(lines in proptest::collection::vec(
            prop_oneof![
                3 => message_text().prop_map(String::into_bytes),
                1 => proptest::collection::vec(any::<u8>(), 0..64),
                1 => Just(br#"{"id":"a","type":"reset","data":{"seed":1}}"#.to_vec()),
                1 => Just(br#"{"id":"a","type":"step","data":{"action":"<action>left</action>"}}"#.to_vec()),
            ],
            0..12,
        )) {
            let input = lines.join(&b'\n');
            let mut output = Vec::new();
            serve_stdio(lake_factory(), input.as_slice(), &mut output, 1024).unwrap();
            for line in output.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let reply: serde_json::Value = serde_json::from_slice(line).unwrap();
                prop_assert!(reply.get("type").is_some(), "{reply}");
            }
        }
    }
}
