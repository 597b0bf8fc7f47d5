//! Batched scoring: per-token log-probabilities and entropies of given tokens.

use candle_core::{DType, Tensor};

use crate::error::{ModelError, Result};
use crate::logprob::{check_f32, logprob_entropy};
use crate::lora::Ctx;
use crate::policy::Policy;
use crate::transformer::{causal_mask, Positions};

/// Which policy a scoring pass computes, and whether it records a graph for backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreMode {
    /// Record the computation so `loss.backward()` reaches the trainable variables; LoRA
    /// dropout is active only in this mode.
    pub grad: bool,
    /// Apply the LoRA adapter (no effect on a model without one).
    pub adapter: bool,
}

impl ScoreMode {
    /// π_θ for the loss: gradient, adapter on.
    pub const TRAIN: ScoreMode = ScoreMode {
        grad: true,
        adapter: true,
    };
    /// π_old (or any no-gradient evaluation of the current policy): adapter on.
    pub const OLD: ScoreMode = ScoreMode {
        grad: false,
        adapter: true,
    };
    /// π_ref with LoRA: the base model, adapter off, no gradient.
    pub const REFERENCE: ScoreMode = ScoreMode {
        grad: false,
        adapter: false,
    };
}

/// Result of [`Policy::score`]. Every tensor is [batch, max_scored_len] f32, where row `i`'s
/// scored tokens are `sequences[i][start[i]..]` and `max_scored_len` is the longest of them.
#[derive(Debug, Clone)]
pub struct Scores {
    /// log π(token | everything before it); 0 where `mask` is 0.
    pub logprobs: Tensor,
    /// Entropy of the next-token distribution at each scored position; 0 where `mask` is 0.
    pub entropies: Tensor,
    /// 1 for scored tokens, 0 for padding.
    pub mask: Tensor,
    /// Number of scored tokens of each row.
    pub lengths: Vec<usize>,
}

impl Scores {
    /// Each row's log-probabilities without padding.
    pub fn logprob_rows(&self) -> Result<Vec<Vec<f32>>> {
        trim(&self.logprobs, &self.lengths)
    }

    /// Each row's entropies without padding.
    pub fn entropy_rows(&self) -> Result<Vec<Vec<f32>>> {
        trim(&self.entropies, &self.lengths)
    }
}

fn trim(t: &Tensor, lengths: &[usize]) -> Result<Vec<Vec<f32>>> {
    let rows = t.detach().to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(rows
        .into_iter()
        .zip(lengths)
        .map(|(mut r, &n)| {
            r.truncate(n);
            r
        })
        .collect())
}

impl Policy {
    /// Log-probabilities and entropies of `sequences[i][start[i]..]`, each token given all
    /// tokens before it (1 ≤ `start[i]` ≤ `sequences[i].len()`).
    ///
    /// Sequences are right-padded into one [batch, max_len] forward pass under a causal mask.
    /// Only the hidden states of scored positions go through the output projection, and the
    /// log-softmax, gather and entropy are one fused pass, so at most one [n_scored, vocab]
    /// logits tensor exists. `mode` selects gradient recording and the adapter.
    pub fn score(
        &self,
        sequences: &[Vec<u32>],
        start: &[usize],
        mode: ScoreMode,
    ) -> Result<Scores> {
        self.check_score_args(sequences, start)?;
        let dev = &self.device;
        let b = sequences.len();
        let lengths: Vec<usize> = sequences
            .iter()
            .zip(start)
            .map(|(s, &st)| s.len() - st)
            .collect();
        let s_max = lengths.iter().copied().max().unwrap_or(0);
        if b == 0 || s_max == 0 {
            let z = Tensor::zeros((b, 0), DType::F32, dev)?;
            return Ok(Scores {
                logprobs: z.clone(),
                entropies: z.clone(),
                mask: z,
                lengths,
            });
        }
        let t = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let pad = self.tokenizer.pad_id();
        let mut ids = Vec::with_capacity(b * t);
        for s in sequences {
            ids.extend(
                s.iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad, t - s.len())),
            );
        }
        let (mut rows, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        for (i, s) in sequences.iter().enumerate() {
            for j in 0..s_max {
                let real = j < lengths[i];
                rows.push(if real {
                    (i * t + start[i] - 1 + j) as u32
                } else {
                    0
                });
                targets.push(if real { s[start[i] + j] } else { 0 });
                mask.push(if real { 1f32 } else { 0.0 });
            }
        }
        let dropout = if mode.grad {
            Some(&self.dropout_rng)
        } else {
            None
        };
        let ctx = Ctx {
            grad: mode.grad,
            adapter: mode.adapter,
            dropout_rng: dropout,
        };
        let ids_t = Tensor::from_vec(ids, (b, t), dev)?;
        let causal = causal_mask(t, dev)?;
        let h = self
            .model
            .hidden(&ids_t, Positions::Range(0), Some(&causal), None, &ctx)?;
        let h = h.reshape((b * t, self.model.cfg.hidden_size))?;
        let sel = h.index_select(&Tensor::from_vec(rows, b * s_max, dev)?, 0)?;
        let logits = self.model.logits(&sel, &ctx)?;
        check_f32(&logits)?;
        let targets = Tensor::from_vec(targets, b * s_max, dev)?;
        let (lp, ent) = logprob_entropy(&logits, &targets)?;
        let mask = Tensor::from_vec(mask, (b, s_max), dev)?;
        Ok(Scores {
            logprobs: (lp.reshape((b, s_max))? * &mask)?,
            entropies: (ent.reshape((b, s_max))? * &mask)?,
            mask,
            lengths,
        })
    }

    /// Logits [len, vocab] at every position of one sequence (for inspection and tests; this
    /// materialises the full logits, which [`Policy::score`] avoids).
    pub fn logits(&self, ids: &[u32], mode: ScoreMode) -> Result<Tensor> {
        let seqs = [ids.to_vec()];
        self.check_score_args(&seqs, &[ids.len().min(1)])?;
        let t = ids.len();
        let ctx = Ctx {
            grad: mode.grad,
            adapter: mode.adapter,
            dropout_rng: None,
        };
        let ids_t = Tensor::from_vec(ids.to_vec(), (1, t), &self.device)?;
        let causal = causal_mask(t, &self.device)?;
        let h = self
            .model
            .hidden(&ids_t, Positions::Range(0), Some(&causal), None, &ctx)?;
        self.model.logits(&h.squeeze(0)?, &ctx)
    }

    fn check_score_args(&self, sequences: &[Vec<u32>], start: &[usize]) -> Result<()> {
        if sequences.len() != start.len() {
            return Err(ModelError::arg(
                "start",
                format!("{} starts for {} sequences", start.len(), sequences.len()),
            ));
        }
        for (i, (s, &st)) in sequences.iter().zip(start).enumerate() {
            if st == 0 || st > s.len() {
                return Err(ModelError::arg(
                    "start",
                    format!("row {i}: start {st} outside 1..={}", s.len()),
                ));
            }
        }
        let max_pos = self.model.cfg.max_position_embeddings;
        if let Some((i, s)) = sequences
            .iter()
            .enumerate()
            .find(|(_, s)| s.len() > max_pos)
        {
            return Err(ModelError::arg(
                "sequences",
                format!(
                    "row {i} has {} tokens, the context holds {max_pos}",
                    s.len()
                ),
            ));
        }
        self.check_ids(sequences, "sequences")
    }
}
