//! Tokenizer and chat template: a thin layer over the `tokenizers` crate and `minijinja`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::fsutil::{read_json, read_text, write_file, write_json};
use crate::tiny_tokenizer;

/// One chat turn for [`Tokenizer::apply_chat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The turn's text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Text ⇄ token ids, special ids, and the model's chat template.
///
/// Real models read `tokenizer.json` and `tokenizer_config.json` from their directory
/// ([`Tokenizer::from_dir`]); the tiny model has a built-in byte-level BPE vocabulary
/// ([`Tokenizer::tiny`]) with a ChatML template, so both go through the same code.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    config: serde_json::Value,
    template: Option<minijinja::Environment<'static>>,
    eos_ids: Vec<u32>,
    pad_id: u32,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_ids", &self.eos_ids)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl Tokenizer {
    /// The tiny model's built-in tokenizer: byte-level BPE over the 256 bytes, a few merges for
    /// words agents use (`up`, `action`, ...), the tags `<think>`, `</think>`, `<action>`,
    /// `</action>` as single tokens, and the specials `<|endoftext|>` (padding), `<|im_start|>`
    /// and `<|im_end|>` (end of turn, the EOS). Generated deterministically in code.
    pub fn tiny() -> Result<Self> {
        let json = tiny_tokenizer::tokenizer_json();
        let inner = tokenizers::Tokenizer::from_bytes(json.to_string().as_bytes())
            .map_err(|e| ModelError::Tokenizer(format!("built-in tokenizer: {e}")))?;
        Self::new(inner, tiny_tokenizer::tokenizer_config(), &[])
    }

    /// Reads `tokenizer.json` (required), `tokenizer_config.json` (optional: chat template,
    /// EOS/PAD/BOS tokens), `chat_template.jinja` (optional, takes precedence),
    /// `generation_config.json` and `config.json` (optional: extra `eos_token_id`s).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path,
                what: "the tokenizer (tokenizer.json)",
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let mut config = if cfg_path.is_file() {
            read_json(&cfg_path)?
        } else {
            serde_json::json!({})
        };
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            config["chat_template"] = serde_json::Value::String(read_text(&jinja)?);
        }
        let mut extra_eos = Vec::new();
        for name in ["generation_config.json", "config.json"] {
            let p = dir.join(name);
            if p.is_file() {
                extra_eos.extend(id_list(read_json(&p)?.get("eos_token_id")));
            }
        }
        Self::new(inner, config, &extra_eos)
    }

    /// Builds a tokenizer from a `tokenizer.json` document and a `tokenizer_config.json`
    /// object (as [`Tokenizer::from_dir`] reads them), plus extra end-of-sequence ids.
    pub(crate) fn from_json_parts(
        tokenizer_json: &serde_json::Value,
        config: serde_json::Value,
        extra_eos: &[u32],
    ) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json.to_string().as_bytes())
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Self::new(inner, config, extra_eos)
    }

    fn new(
        inner: tokenizers::Tokenizer,
        config: serde_json::Value,
        extra_eos: &[u32],
    ) -> Result<Self> {
        let eos_token = token_field(&config, "eos_token");
        let bos_token = token_field(&config, "bos_token");
        let mut eos_ids: Vec<u32> = extra_eos.to_vec();
        if let Some(t) = &eos_token {
            if let Some(id) = inner.token_to_id(t) {
                eos_ids.push(id);
            }
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        let pad_id = token_field(&config, "pad_token")
            .and_then(|t| inner.token_to_id(&t))
            .or_else(|| eos_ids.first().copied())
            .ok_or_else(|| {
                ModelError::Tokenizer("neither pad_token nor eos_token names a known token".into())
            })?;
        let template = chat_template_source(&config)
            .map(compile_template)
            .transpose()?;
        Ok(Tokenizer {
            inner,
            config,
            template,
            eos_ids,
            pad_id,
            bos_token,
            eos_token,
        })
    }

    /// Token ids of `text`, without adding BOS/EOS (chat templates write special tokens as text).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer(format!("encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, leaving out special tokens (EOS, padding, chat markers).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer(format!("decode: {e}")))
    }

    /// Text of `ids` including special tokens.
    pub fn decode_raw(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| ModelError::Tokenizer(format!("decode: {e}")))
    }

    /// Ids that end a generation (from `eos_token`, `generation_config.json`, `config.json`).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Id used to pad batches (`pad_token`, else the first EOS id).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether the tokenizer has a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// Renders `messages` with the model's chat template (Jinja, as transformers'
    /// `apply_chat_template(tokenize=False)`); with `add_generation_prompt` the text ends with the
    /// header of an assistant turn. Errors when the model has no template.
    pub fn apply_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let env = self.template.as_ref().ok_or_else(|| {
            ModelError::Template(
                "the tokenizer has no chat_template (tokenizer_config.json)".into(),
            )
        })?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| ModelError::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        })
        .map_err(|e| ModelError::Template(format!("{e:#}")))
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = self
            .inner
            .to_string(true)
            .map_err(|e| ModelError::Tokenizer(format!("serialise: {e}")))?;
        write_file(&dir.join("tokenizer.json"), text.as_bytes())?;
        write_json(&dir.join("tokenizer_config.json"), &self.config)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn token_field(config: &serde_json::Value, key: &str) -> Option<String> {
    match config.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

fn id_list(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

fn chat_template_source(config: &serde_json::Value) -> Option<String> {
    match config.get("chat_template")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => {
            let pick = list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| list.first())?;
            pick.get("template")?.as_str().map(str::to_owned)
        }
        _ => None,
    }
}

fn compile_template(source: String) -> Result<minijinja::Environment<'static>> {
    let mut env = minijinja::Environment::new();
    // transformers renders chat templates with trim_blocks and lstrip_blocks.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template_owned("chat", source)
        .map_err(|e| ModelError::Template(format!("{e:#}")))?;
    Ok(env)
}
