//! Reading llama.cpp GGUF files (Llama and Qwen2 architectures): the configuration from the
//! `llama.*` / `qwen2.*` metadata, the tokenizer and chat template from `tokenizer.*`, and the
//! weights dequantized to f32 and renamed to the Hugging Face layout.
//!
//! llama.cpp's converter permutes the rows of Llama's q/k projections (its rotary embedding
//! rotates adjacent pairs, transformers' rotates halves); loading undoes that, so a GGUF model
//! equals the Hugging Face model it was converted from.

mod config;
mod file;
mod tensors;
mod tokenizer;

use std::path::Path;

pub(crate) use file::{gguf_err, GgufFile};

/// Whether `path` names a GGUF file rather than a model directory: any regular file, or a
/// path ending in `.gguf`, is taken for one (opening it then checks the magic bytes).
pub(crate) fn is_gguf_path(path: &Path) -> bool {
    path.is_file()
        || path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}
