//! Sampling parameters, generation results, and drawing one token from a row of logits.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// How to draw tokens in [`crate::Policy::generate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy (arg-max). Default 1.0.
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches
    /// `top_p` (1.0 = off, the default).
    pub top_p: f64,
    /// Keep only the `top_k` most likely tokens (0 = off, the default).
    pub top_k: usize,
    /// Most tokens generated per prompt (default 256).
    pub max_new_tokens: usize,
    /// Generation of a row stops once its decoded text contains one of these (default none).
    pub stop_strings: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 256,
            stop_strings: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of at most `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        SamplingParams {
            temperature: 0.0,
            max_new_tokens,
            ..Self::default()
        }
    }

    /// Checks ranges: temperature ≥ 0, 0 < top_p ≤ 1, no empty stop string.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(ModelError::arg(
                "temperature",
                format!("{} must be ≥ 0", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::arg(
                "top_p",
                format!("{} must be in (0, 1]", self.top_p),
            ));
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return Err(ModelError::arg("stop_strings", "an empty stop string"));
        }
        Ok(())
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token was drawn (it is the last of `tokens`).
    Eos,
    /// The decoded text came to contain this stop string (the token completing it is the last
    /// of `tokens`; the text is not cut).
    Stop(String),
    /// `max_new_tokens` were generated, or the model's context is full.
    Length,
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Generated ids (the EOS or stop-completing token included).
    pub tokens: Vec<u32>,
    /// Log-probability of each token under the model's own distribution (softmax of the raw
    /// logits, before temperature/top-k/top-p), i.e. what [`crate::Policy::score`] returns.
    pub logprobs: Vec<f32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The tokens decoded, special tokens left out.
    pub text: String,
}

/// A drawn token and its log-probability under the raw logits.
pub(crate) struct Draw {
    pub token: u32,
    pub logprob: f32,
}

/// Draws one token from `logits` with `params` and `rng`. Greedy draws consume no randomness.
pub(crate) fn draw(logits: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> Draw {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|z| (z - max).exp()).sum::<f32>().ln();
    let token = if params.temperature == 0.0 {
        argmax(logits)
    } else {
        sample(logits, params, rng)
    };
    Draw {
        token: token as u32,
        logprob: logits[token] - lse,
    }
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn sample(logits: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> usize {
    let t = params.temperature as f32;
    // Candidates: all ids, or by descending logit (ties by id) when top-k/top-p truncate.
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if params.top_k > 0 || params.top_p < 1.0 {
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if params.top_k > 0 {
            idx.truncate(params.top_k);
        }
    }
    let max = idx
        .iter()
        .map(|&i| logits[i])
        .fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i] - max) / t) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if params.top_p < 1.0 {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (n, p) in probs.iter().enumerate() {
            acc += p;
            if acc >= params.top_p {
                keep = n + 1;
                break;
            }
        }
        probs.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let u = rng.random::<f64>() * total;
    let mut acc = 0.0;
    for (n, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return idx[n];
        }
    }
    idx[probs.len() - 1]
}
