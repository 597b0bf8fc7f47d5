//! Sampling parameters, generation results, and drawing one token from a row of logits.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::processing::{LogitProcessing, RowDist};

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
    /// Log-probability of each token under the distribution it was sampled from: softmax of
    /// logits / temperature over the top-k / top-p kept set
    /// ([`LogitProcessing::from_sampling`]), i.e. what [`crate::Policy::score_with`] returns
    /// with that processing. Greedy decoding (temperature 0) reports the raw distribution's
    /// log-probabilities, what [`crate::Policy::score`] returns.
    pub logprobs: Vec<f32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The tokens decoded, special tokens left out.
    pub text: String,
}

/// A drawn token and its log-probability under the distribution it was drawn from.
pub(crate) struct Draw {
    pub token: u32,
    pub logprob: f32,
}

/// Draws one token from `logits` with `params` and `rng`, and reports its log-probability
/// under [`LogitProcessing::from_sampling`] (the raw distribution when greedy). Greedy draws
/// consume no randomness.
pub(crate) fn draw(logits: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> Draw {
    let processing = LogitProcessing::from_sampling(params);
    let dist = RowDist::new(logits, &processing);
    let token = if params.temperature == 0.0 {
        argmax(logits)
    } else {
        sample(logits, params.temperature, dist.kept.as_deref(), rng)
    };
    Draw {
        token: token as u32,
        logprob: dist.logprob(logits, token),
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

/// Samples from softmax(logits / t) over `kept` (most likely first), or over all ids.
fn sample(logits: &[f32], t: f64, kept: Option<&[u32]>, rng: &mut ChaCha8Rng) -> usize {
    let all: Vec<u32>;
    let idx = match kept {
        Some(k) => k,
        None => {
            all = (0..logits.len() as u32).collect();
            &all
        }
    };
    let max = idx
        .iter()
        .map(|&i| logits[i as usize])
        .fold(f32::NEG_INFINITY, f32::max);
    let probs: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i as usize] - max) as f64) / t).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    let u = rng.random::<f64>() * total;
    let mut acc = 0.0;
    for (n, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return idx[n] as usize;
        }
    }
    idx[idx.len() - 1] as usize
}

impl LogitProcessing {
    /// The distribution `generate` samples from with `params`. Greedy decoding (T = 0) has no
    /// sampling distribution; its tokens are reported under the raw distribution ([`Self::RAW`]).
    pub fn from_sampling(params: &SamplingParams) -> Self {
        if params.temperature == 0.0 {
            return Self::RAW;
        }
        LogitProcessing {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
        }
    }
}
