//! Language-model policies for gigpo on [candle](https://github.com/huggingface/candle).
//!
//! A [`Policy`] is a decoder-only transformer (Qwen2 / Llama layout, our own implementation so
//! every op on the training path records a backward step), its [`Tokenizer`] with chat
//! template, and optionally a LoRA adapter. It can
//! - **sample** batches of continuations with a KV cache ([`Policy::generate`]),
//! - **score** given tokens — per-token log-probabilities and entropies, with or without
//!   gradient, adapter on or off ([`Policy::score`], [`ScoreMode`]),
//! - be **trained** through its [`Policy::trainable_vars`] with the in-place [`AdamW`],
//! - be **saved** in the Hugging Face layout ([`Policy::save`], [`SaveMode`]).
//!
//! The built-in tiny model ([`Policy::tiny`]) and checkpoints loaded from disk
//! ([`Policy::load`]) share one code path.
//!
//! ```
//! use gigpo_model::{ChatMessage, Device, Policy, SamplingParams, ScoreMode, TinyConfig};
//! # fn main() -> gigpo_model::Result<()> {
//! let policy = Policy::tiny(&TinyConfig::default(), 7, &Device::Cpu)?;
//! let tok = policy.tokenizer();
//! let prompt = tok.apply_chat(&[ChatMessage::new("user", "Push the box.")], true)?;
//! let ids = tok.encode(&prompt)?;
//! let params = SamplingParams { max_new_tokens: 8, ..SamplingParams::default() };
//! let out = policy.generate(&[ids.clone()], &params, 42)?;
//! let mut seq = ids.clone();
//! seq.extend(&out[0].tokens);
//! let scores = policy.score(&[seq], &[ids.len()], ScoreMode::OLD)?;
//! assert_eq!(scores.logprobs.dims(), &[1, out[0].tokens.len()]);
//! # Ok(()) }
//! ```

pub mod atomic;
mod attach;
mod attention;
mod batched;
mod checkpoint;
mod config;
mod cpu;
mod device;
mod error;
mod exp;
mod fsutil;
mod fused;
mod generate;
mod gguf;
mod limits;
mod load;
mod logprob;
mod lora;
mod ops;
mod optim;
mod policy;
mod processing;
mod sampling;
mod save;
mod score;
mod tiny_tokenizer;
mod tokenizer;
mod train_pass;
mod transformer;
mod weights;

pub use candle_core::{backprop::GradStore, Tensor, Var};
pub use checkpoint::check_finite;
pub use config::{Architecture, Llama3RopeScaling, ModelConfig, TinyConfig};
pub use device::{Device, DeviceChoice, ResolvedDevice};
pub use error::{CudaUnavailable, ModelError, Result};
pub use fsutil::{read_safetensors, write_safetensors};
pub use generate::row_seed;
pub use limits::{MAX_LAYERS, MAX_TOKENS, MAX_WIDTH};
pub use load::convert_gguf;
pub use logprob::logprob_entropy;
pub use lora::{LoraConfig, TargetModule};
pub use optim::{global_grad_norm, AdamW, AdamWConfig, StepStats};
pub use policy::Policy;
pub use processing::{LogitProcessing, EXCLUDED_LOGPROB};
pub use sampling::{FinishReason, Generation, SamplingParams};
pub use save::SaveMode;
pub use score::{ScoreMode, Scores};
pub use tokenizer::{ChatMessage, Tokenizer};
pub use train_pass::{TrainMemory, TrainPass};
