//! The tokenizer and chat template from a GGUF file's `tokenizer.*` metadata, as the
//! `tokenizer.json` and `tokenizer_config.json` transformers builds from it.

use serde_json::json;

use super::file::{gguf_err, GgufFile};
use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// GPT-2's pre-tokenizer split (also SmolLM's): byte-level with its built-in regex.
const PRE_GPT2: &[&str] = &["gpt2", "gpt-2", "default", "smollm"];

/// Llama 3's pre-tokenizer regex (`tokenizer.ggml.pre = llama-bpe`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's pre-tokenizer regex (`tokenizer.ggml.pre = qwen2`).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's `token_type` of control tokens (special tokens).
const TOKEN_CONTROL: i64 = 3;
/// llama.cpp's `token_type` of user-defined tokens (added, not special).
const TOKEN_USER_DEFINED: i64 = 4;

impl GgufFile {
    /// The tokenizer (`tokenizer.ggml.model = gpt2`: byte-level BPE) with the chat template.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let model = self.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(self.field_err(
                "tokenizer.ggml.model",
                format!("{model:?} unsupported; supported: gpt2 (byte-level BPE)"),
            ));
        }
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let doc = self.tokenizer_json(&tokens)?;
        let config = self.tokenizer_config(&tokens)?;
        let mut extra_eos = Vec::new();
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
            if let Some(id) = self.token_id(key, &tokens)? {
                extra_eos.push(id as u32);
            }
        }
        Tokenizer::from_json_parts(&doc, config, &extra_eos)
            .map_err(|e| gguf_err(&self.path, format!("tokenizer: {e}")))
    }

    /// A `tokenizer.json` document equal to what transformers builds from the same metadata.
    fn tokenizer_json(&self, tokens: &[String]) -> Result<serde_json::Value> {
        let merges = self.strings("tokenizer.ggml.merges")?;
        let types = if self
            .content
            .metadata
            .contains_key("tokenizer.ggml.token_type")
        {
            self.ints("tokenizer.ggml.token_type")?
        } else {
            Vec::new()
        };
        let vocab: serde_json::Map<String, serde_json::Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        let added: Vec<serde_json::Value> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == TOKEN_CONTROL || **t == TOKEN_USER_DEFINED)
            .filter_map(|(i, t)| tokens.get(i).map(|tok| (i, *t == TOKEN_CONTROL, tok)))
            .map(|(i, special, tok)| {
                json!({"id": i, "content": tok, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": special})
            })
            .collect();
        let (normalizer, pre_tokenizer) = self.pre_tokenizer()?;
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                                "trim_offsets": false, "use_regex": true});
        Ok(json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": byte_level,
            "decoder": byte_level,
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false,
                "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges,
            },
        }))
    }

    /// Normalizer and pre-tokenizer for `tokenizer.ggml.pre`.
    fn pre_tokenizer(&self) -> Result<(serde_json::Value, serde_json::Value)> {
        let pre = self.opt_string("tokenizer.ggml.pre")?;
        let split = |regex: &str| {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated",
                 "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
                 "use_regex": false},
            ]})
        };
        match pre.as_deref() {
            None => Ok((json!(null), byte_level_pre())),
            Some(p) if PRE_GPT2.contains(&p) => Ok((json!(null), byte_level_pre())),
            Some("llama-bpe") | Some("llama3") => Ok((json!(null), split(LLAMA3_REGEX))),
            Some("qwen2") => Ok((json!({"type": "NFC"}), split(QWEN2_REGEX))),
            Some(other) => Err(self.field_err(
                "tokenizer.ggml.pre",
                format!("{other:?} unsupported; supported: gpt2, smollm, llama-bpe, qwen2"),
            )),
        }
    }

    /// `tokenizer_config.json`: chat template and the BOS/EOS/padding tokens.
    fn tokenizer_config(&self, tokens: &[String]) -> Result<serde_json::Value> {
        let mut cfg = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": false,
            "model_max_length": self.uint(&self.key("context_length"))?,
        });
        if let Some(t) = self.opt_string("tokenizer.chat_template")? {
            cfg["chat_template"] = json!(t);
        }
        for (field, key) in [
            ("bos_token", "tokenizer.ggml.bos_token_id"),
            ("eos_token", "tokenizer.ggml.eos_token_id"),
            ("pad_token", "tokenizer.ggml.padding_token_id"),
            ("unk_token", "tokenizer.ggml.unknown_token_id"),
        ] {
            if let Some(id) = self.token_id(key, tokens)? {
                cfg[field] = json!(tokens[id]);
            }
        }
        Ok(cfg)
    }

    fn token_id(&self, key: &str, tokens: &[String]) -> Result<Option<usize>> {
        match self.opt_uint(key)? {
            Some(id) if id >= tokens.len() => Err(self.field_err(
                key,
                format!("id {id} is outside the vocabulary of {}", tokens.len()),
            )),
            other => Ok(other),
        }
    }
}

fn byte_level_pre() -> serde_json::Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
           "use_regex": true})
}
