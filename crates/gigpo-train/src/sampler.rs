//! The sampler seam: what rollouts and evaluation need from whatever generates the actions.
//!
//! A [`Sampler`] has a tokenizer and turns a batch of prompts (token ids) into one result per
//! prompt: the generated token ids with the log-probability of each under the distribution it
//! was drawn from, the text, and why generation stopped ([`Generation`]); or a [`RowFault`]
//! when the sampler could not answer that prompt (an inference server that died). A faulted
//! row ends its episode as an environment fault does; an error of the whole call stops the
//! rollout.
//!
//! Two samplers exist: the in-process [`Policy`] (candle, the default `rollout.backend`) and
//! [`crate::vllm::VllmSampler`], which sends the prompts to vLLM servers.

use std::fmt;

use gigpo_model::{Generation, Policy, SamplingParams, Tokenizer};

use crate::context;
use crate::error::Result;
use crate::prompt::PromptStyle;

/// Why a sampler gave no generation for one prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFault(pub String);

impl fmt::Display for RowFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The result for one prompt of a batch.
pub type RowResult = std::result::Result<Generation, RowFault>;

/// Something that samples continuations of prompts for rollouts and evaluation.
pub trait Sampler {
    /// The tokenizer prompts are encoded with and generations decoded with.
    fn tokenizer(&self) -> &Tokenizer;

    /// Samples one continuation of each prompt with `params`; row `i` draws from a seed derived
    /// from `seed` and `i` ([`gigpo_model::row_seed`]). Returns one result per prompt, in order.
    fn generate(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        seed: u64,
    ) -> Result<Vec<RowResult>>;

    /// Checks that a sequence of `needed` tokens, after `turns` turns of prompts built in
    /// `style`, fits the context the sampler serves.
    fn fits(&self, style: &PromptStyle, needed: usize, turns: usize) -> Result<()>;
}

impl Sampler for Policy {
    fn tokenizer(&self) -> &Tokenizer {
        Policy::tokenizer(self)
    }

    fn generate(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        seed: u64,
    ) -> Result<Vec<RowResult>> {
        let gens = Policy::generate(self, prompts, params, seed)?;
        Ok(gens.into_iter().map(Ok).collect())
    }

    fn fits(&self, style: &PromptStyle, needed: usize, turns: usize) -> Result<()> {
        context::fits(self, style, needed, turns)
    }
}
