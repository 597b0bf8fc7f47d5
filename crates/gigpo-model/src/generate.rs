//! Batched sampling with a KV cache.

use candle_core::Tensor;
use candle_nn::kv_cache::KvCache;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::attention::AttnMask;
use crate::error::{ModelError, Result};
use crate::lora::Ctx;
use crate::policy::Policy;
use crate::sampling::{draw, FinishReason, Generation, SamplingParams};
use crate::transformer::Positions;

/// The seed row `row` of a batch uses when [`Policy::generate`] is called with `seed`
/// (SplitMix64 of the pair), so a row can be reproduced alone with
/// [`Policy::generate_seeded`].
pub fn row_seed(seed: u64, row: usize) -> u64 {
    let mut z = seed ^ (row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Per-row decoding state.
struct Row {
    rng: ChaCha8Rng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    finish: Option<FinishReason>,
}

impl Policy {
    /// Samples a continuation of each prompt (token ids, e.g. from
    /// [`crate::Tokenizer::encode`] of [`crate::Tokenizer::apply_chat`]) with the adapter on and
    /// no gradient. Row `i` draws from a ChaCha8 generator seeded with [`row_seed`]`(seed, i)`.
    ///
    /// Prompts are left-padded into one batch with masks and per-row positions, so each row's
    /// result equals generating it alone. A row ends at an EOS id, when its text contains a
    /// stop string, or after `max_new_tokens` (or when the context is full).
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        seed: u64,
    ) -> Result<Vec<Generation>> {
        let seeds: Vec<u64> = (0..prompts.len()).map(|i| row_seed(seed, i)).collect();
        self.generate_seeded(prompts, params, &seeds)
    }

    /// [`Policy::generate`] with an explicit seed per prompt (`seeds.len() == prompts.len()`).
    pub fn generate_seeded(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        seeds: &[u64],
    ) -> Result<Vec<Generation>> {
        params.validate()?;
        if seeds.len() != prompts.len() {
            return Err(ModelError::arg(
                "seeds",
                format!("{} seeds for {} prompts", seeds.len(), prompts.len()),
            ));
        }
        self.check_ids(prompts, "prompts")?;
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(ModelError::arg("prompts", format!("prompt {i} is empty")));
        }
        if prompts.is_empty() || params.max_new_tokens == 0 {
            return self.finish_rows(prompts.iter().map(|_| empty_row()).collect());
        }
        let lmax = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let max_pos = self.model.cfg.max_position_embeddings;
        if lmax >= max_pos {
            return Err(ModelError::arg(
                "prompts",
                format!("a prompt of {lmax} tokens leaves no room in the context of {max_pos}"),
            ));
        }
        let max_new = params.max_new_tokens.min(max_pos - lmax);
        let mut rows: Vec<Row> = seeds
            .iter()
            .map(|&s| Row {
                rng: ChaCha8Rng::seed_from_u64(s),
                tokens: Vec::new(),
                logprobs: Vec::new(),
                finish: None,
            })
            .collect();
        self.decode_loop(prompts, params, max_new, &mut rows)?;
        self.finish_rows(rows)
    }

    fn decode_loop(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        max_new: usize,
        rows: &mut [Row],
    ) -> Result<()> {
        let b = prompts.len();
        let lmax = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let pads: Vec<usize> = prompts.iter().map(|p| lmax - p.len()).collect();
        let pad_id = self.tokenizer.pad_id();
        let mut ids = Vec::with_capacity(b * lmax);
        let mut pos = Vec::with_capacity(b * lmax);
        for (p, &pad) in prompts.iter().zip(&pads) {
            ids.extend(std::iter::repeat_n(pad_id, pad).chain(p.iter().copied()));
            pos.extend((0..lmax).map(|j| j.saturating_sub(pad) as u32));
        }
        let ctx = Ctx {
            grad: false,
            adapter: true,
            dropout_rng: None,
        };
        let mut cache: Vec<KvCache> = (0..self.model.cfg.num_layers)
            .map(|_| KvCache::new(2, lmax + max_new))
            .collect();
        let mask = AttnMask::Padded {
            pads: &pads,
            past: 0,
        };
        let mut logits = self.last_logits((ids, pos), (b, lmax), mask, &mut cache, &ctx)?;
        for step in 0..max_new {
            let table = logits.to_vec2::<f32>()?;
            let mut next = Vec::with_capacity(b);
            for (row, l) in rows.iter_mut().zip(&table) {
                if row.finish.is_some() {
                    next.push(pad_id);
                    continue;
                }
                let d = draw(l, params, &mut row.rng);
                row.tokens.push(d.token);
                row.logprobs.push(d.logprob);
                row.finish = self.finish_reason(row, params, step + 1 == max_new)?;
                next.push(d.token);
            }
            if rows.iter().all(|r| r.finish.is_some()) {
                break;
            }
            let past = lmax + step;
            let pos: Vec<u32> = pads.iter().map(|&p| (past - p) as u32).collect();
            let mask = if b == 1 {
                AttnMask::None
            } else {
                AttnMask::Padded { pads: &pads, past }
            };
            logits = self.last_logits((next, pos), (b, 1), mask, &mut cache, &ctx)?;
        }
        Ok(())
    }

    /// Runs `ids` [b, t] at positions `pos` (row-major, one per token) through the model,
    /// appending to `cache`; returns the logits [b, vocab] of each row's last token.
    fn last_logits(
        &self,
        (ids, pos): (Vec<u32>, Vec<u32>),
        (b, t): (usize, usize),
        mask: AttnMask,
        cache: &mut [KvCache],
        ctx: &Ctx,
    ) -> Result<Tensor> {
        let ids = Tensor::from_vec(ids, (b, t), &self.device)?;
        let pos = Tensor::from_vec(pos, b * t, &self.device)?;
        let h = self
            .model
            .hidden(&ids, Positions::PerToken(&pos), mask, Some(cache), ctx)?;
        self.model.logits(&h.narrow(1, t - 1, 1)?.squeeze(1)?, ctx)
    }

    fn finish_reason(
        &self,
        row: &Row,
        params: &SamplingParams,
        last: bool,
    ) -> Result<Option<FinishReason>> {
        let tok = *row.tokens.last().expect("a token was just pushed");
        if self.tokenizer.eos_ids().contains(&tok) {
            return Ok(Some(FinishReason::Eos));
        }
        if !params.stop_strings.is_empty() {
            let text = self.tokenizer.decode_raw(&row.tokens)?;
            if let Some(s) = params
                .stop_strings
                .iter()
                .find(|s| text.contains(s.as_str()))
            {
                return Ok(Some(FinishReason::Stop(s.clone())));
            }
        }
        Ok(last.then_some(FinishReason::Length))
    }

    fn finish_rows(&self, rows: Vec<Row>) -> Result<Vec<Generation>> {
        rows.into_iter()
            .map(|r| {
                Ok(Generation {
                    text: self.tokenizer.decode(&r.tokens)?,
                    tokens: r.tokens,
                    logprobs: r.logprobs,
                    finish_reason: r.finish.unwrap_or(FinishReason::Length),
                })
            })
            .collect()
    }

    /// Checks that every id is inside the model's vocabulary.
    pub(crate) fn check_ids(&self, seqs: &[Vec<u32>], name: &'static str) -> Result<()> {
        let v = self.model.cfg.vocab_size as u32;
        for (i, s) in seqs.iter().enumerate() {
            if let Some(&t) = s.iter().find(|&&t| t >= v) {
                return Err(ModelError::arg(
                    name,
                    format!("row {i}: token id {t} outside the vocabulary of {v}"),
                ));
            }
        }
        Ok(())
    }
}

fn empty_row() -> Row {
    Row {
        rng: ChaCha8Rng::seed_from_u64(0),
        tokens: Vec::new(),
        logprobs: Vec::new(),
        finish: Some(FinishReason::Length),
    }
}
