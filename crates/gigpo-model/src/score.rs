//! Batched scoring: per-token log-probabilities and entropies of given tokens.

use candle_core::{DType, Tensor};

use crate::error::{ModelError, Result};
use crate::logprob::head_logprob_entropy;
use crate::lora::Ctx;
use crate::policy::Policy;
use crate::processing::LogitProcessing;

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

/// A right-padded scoring batch: ids, the rows of scored positions and their targets.
pub(crate) struct ScoreBatch {
    /// Ids [b, t] u32, right-padded.
    pub ids: Tensor,
    /// Rows (into the [b·t, d] hidden states) that predict a scored token: b · s_max.
    pub rows: Tensor,
    /// The scored token of each row (0 for padding).
    pub targets: Vec<u32>,
    /// [b, s_max]: 1 for scored tokens.
    pub mask: Tensor,
    /// Scored tokens of each row.
    pub lengths: Vec<usize>,
    /// (b, t, s_max).
    pub dims: (usize, usize, usize),
}

impl ScoreBatch {
    /// The batch of `sequences` scored from `start`; `None` when nothing is scored.
    pub fn new(
        p: &Policy,
        sequences: &[Vec<u32>],
        start: &[usize],
    ) -> Result<(Option<Self>, Vec<usize>)> {
        p.check_score_args(sequences, start)?;
        let dev = &p.device;
        let b = sequences.len();
        let lengths: Vec<usize> = sequences
            .iter()
            .zip(start)
            .map(|(s, &st)| s.len() - st)
            .collect();
        let s_max = lengths.iter().copied().max().unwrap_or(0);
        if b == 0 || s_max == 0 {
            return Ok((None, lengths));
        }
        let t = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let pad = p.tokenizer.pad_id();
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
        let batch = ScoreBatch {
            ids: Tensor::from_vec(ids, (b, t), dev)?,
            rows: Tensor::from_vec(rows, b * s_max, dev)?,
            targets,
            mask: Tensor::from_vec(mask, (b, s_max), dev)?,
            lengths: lengths.clone(),
            dims: (b, t, s_max),
        };
        Ok((Some(batch), lengths))
    }

    /// Scores from the final hidden states `h` [b, t, d].
    pub fn scores(
        self,
        p: &Policy,
        h: &Tensor,
        ctx: &Ctx,
        processing: &LogitProcessing,
    ) -> Result<Scores> {
        let (b, t, s_max) = self.dims;
        let h = h.reshape((b * t, p.model.cfg.hidden_size))?;
        let sel = h.index_select(&self.rows, 0)?;
        let w = p.model.head_weight(ctx);
        let (lp, ent) = head_logprob_entropy(&sel, &w, &self.targets, processing)?;
        Ok(Scores {
            logprobs: (lp.reshape((b, s_max))? * &self.mask)?,
            entropies: (ent.reshape((b, s_max))? * &self.mask)?,
            mask: self.mask,
            lengths: self.lengths,
        })
    }
}

/// Scores of a batch with nothing to score: [b, 0] tensors.
pub(crate) fn empty_scores(lengths: Vec<usize>, dev: &candle_core::Device) -> Result<Scores> {
    let z = Tensor::zeros((lengths.len(), 0), DType::F32, dev)?;
    Ok(Scores {
        logprobs: z.clone(),
        entropies: z.clone(),
        mask: z,
        lengths,
    })
}

impl Policy {
    /// Log-probabilities and entropies of `sequences[i][start[i]..]` under the model's raw
    /// distribution, each token given all tokens before it (1 ≤ `start[i]` ≤
    /// `sequences[i].len()`): [`Policy::score_with`] with [`LogitProcessing::RAW`].
    pub fn score(
        &self,
        sequences: &[Vec<u32>],
        start: &[usize],
        mode: ScoreMode,
    ) -> Result<Scores> {
        self.score_with(sequences, start, mode, &LogitProcessing::RAW)
    }

    /// Log-probabilities and entropies of `sequences[i][start[i]..]` under the processed
    /// distribution `processing` (softmax(logits / T) restricted to top-k, then top-p,
    /// renormalised: the distribution [`Policy::generate`] samples from with the same
    /// settings). A token outside the kept set gets [`crate::EXCLUDED_LOGPROB`] (gradient 0);
    /// entropies are those of the kept distribution.
    ///
    /// Sequences are right-padded into one [batch, max_len] forward pass under a causal mask.
    /// Only the hidden states of scored positions go through the output projection, in chunks
    /// of rows fused with the log-softmax, gather and entropy, so the [n_scored, vocab] logits
    /// never exist whole. `mode` selects gradient recording and the adapter. For training with
    /// bounded memory see [`Policy::train_pass`].
    pub fn score_with(
        &self,
        sequences: &[Vec<u32>],
        start: &[usize],
        mode: ScoreMode,
        processing: &LogitProcessing,
    ) -> Result<Scores> {
        processing.validate()?;
        let (batch, lengths) = ScoreBatch::new(self, sequences, start)?;
        let Some(batch) = batch else {
            return empty_scores(lengths, &self.device);
        };
        let ctx = Ctx {
            grad: mode.grad,
            adapter: mode.adapter,
            dropout_rng: mode.grad.then_some(&self.dropout_rng),
        };
        let h = self.model.causal_hidden(&batch.ids, &ctx)?;
        batch.scores(self, &h, &ctx, processing)
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
        let h = self.model.causal_hidden(&ids_t, &ctx)?;
        self.model.logits(&h.squeeze(0)?, &ctx)
    }

    pub(crate) fn check_score_args(&self, sequences: &[Vec<u32>], start: &[usize]) -> Result<()> {
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
