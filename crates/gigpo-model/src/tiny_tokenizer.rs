//! The tiny model's vocabulary, generated deterministically: byte-level BPE with a few merges.

use serde_json::{json, Map, Value};

/// Words that get their own merge chain, so agent outputs take few tokens. Each is merged both
/// bare and with a leading space.
const WORDS: &[&str] = &[
    "action",
    "think",
    "up",
    "down",
    "left",
    "right",
    "box",
    "wall",
    "target",
    "player",
    "the",
    "you",
    "move",
    "push",
    "step",
    "valid",
    "reward",
    "state",
    // The words of the step prompt.
    "Current",
    "observation",
    "Observation",
    "Previous",
    "steps",
    "Action",
    "Admissible",
    "actions",
];

/// Grid cells of the built-in environments (Sokoban `# _ O X √ P S`, FrozenLake `F H G W`).
/// Rows are cells joined by single spaces, so a cell with its leading space is one token and a
/// 6×6 room is 6 × 6 cell tokens plus 5 newlines: the model reads one token per cell.
const CELLS: &[&str] = &["#", "_", "O", "X", "√", "P", "S", "F", "H", "G", "W"];

/// Tags that are single (non-special) tokens.
const TAGS: &[&str] = &["<think>", "</think>", "<action>", "</action>"];

/// Special tokens: padding, turn start, turn end (EOS).
pub(crate) const SPECIALS: &[&str] = &["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// ChatML, as Qwen2 instruct models use it.
pub(crate) const CHAT_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// GPT-2's reversible map from bytes to printable characters.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut out = vec!['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        out[b as usize] = char::from_u32(c).expect("valid code point");
    }
    out
}

/// Vocabulary (token → id) in id order, and merges. Each word is first split by the merges
/// made so far (as BPE would), then its pieces are merged left to right, so every word ends up
/// as one token.
fn vocab_and_merges() -> (Vec<String>, Vec<(String, String)>) {
    let chars = byte_chars();
    let mut vocab: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    let mut merges: Vec<(String, String)> = Vec::new();
    let space = chars[b' ' as usize];
    for word in WORDS.iter().chain(CELLS) {
        for prefix in [String::new(), space.to_string()] {
            let symbols: Vec<String> = prefix
                .chars()
                .chain(word.bytes().map(|b| chars[b as usize]))
                .map(|c| c.to_string())
                .collect();
            let pieces = apply_merges(symbols, &merges);
            let mut acc = pieces[0].clone();
            for s in &pieces[1..] {
                let merged = format!("{acc}{s}");
                if !vocab.contains(&merged) {
                    merges.push((acc.clone(), s.clone()));
                    vocab.push(merged.clone());
                }
                acc = merged;
            }
        }
    }
    (vocab, merges)
}

/// BPE: repeatedly merges the adjacent pair of lowest rank.
fn apply_merges(mut pieces: Vec<String>, merges: &[(String, String)]) -> Vec<String> {
    loop {
        let best = (0..pieces.len().saturating_sub(1))
            .filter_map(|i| {
                merges
                    .iter()
                    .position(|(a, b)| *a == pieces[i] && *b == pieces[i + 1])
                    .map(|r| (r, i))
            })
            .min();
        let Some((_, i)) = best else { return pieces };
        let right = pieces.remove(i + 1);
        pieces[i].push_str(&right);
    }
}

/// The `tokenizer.json` document.
pub(crate) fn tokenizer_json() -> Value {
    let (vocab, merges) = vocab_and_merges();
    let mut vocab_map = Map::new();
    for (i, tok) in vocab.iter().enumerate() {
        vocab_map.insert(tok.clone(), json!(i));
    }
    let mut added = Vec::new();
    let mut next = vocab.len();
    for (list, special) in [(SPECIALS, true), (TAGS, false)] {
        for tok in list {
            added.push(json!({
                "id": next, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special,
            }));
            next += 1;
        }
    }
    let merges: Vec<Value> = merges
        .iter()
        .map(|(a, b)| json!(format!("{a} {b}")))
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab_map, "merges": merges,
        },
    })
}

/// The `tokenizer_config.json` document.
pub(crate) fn tokenizer_config() -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": null,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 2048,
    })
}

#[cfg(test)]
mod tests {
    use crate::Tokenizer;

    #[test]
    fn a_grid_is_one_token_per_cell() {
        let tok = Tokenizer::tiny().unwrap();
        let grid = "# # # # # #\n# _ P _ O #\n# _ X √ S #\n# # # # # #";
        let ids = tok.encode(grid).unwrap();
        // 24 cells and 3 newlines.
        assert_eq!(ids.len(), 27, "{ids:?}");
        assert_eq!(tok.decode_raw(&ids).unwrap(), grid);
        let ids = tok.encode("Current observation:\n").unwrap();
        assert_eq!(ids.len(), 4, "{ids:?}");
    }
}
