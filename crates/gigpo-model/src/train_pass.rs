//! Training passes with bounded memory: scores with a graph, then a backward step that returns
//! the gradients of the trainable variables only.

use std::sync::Mutex;

use candle_core::{backprop::GradStore, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use crate::attention::AttnMask;
use crate::error::{ModelError, Result};
use crate::lora::Ctx;
use crate::policy::Policy;
use crate::processing::LogitProcessing;
use crate::score::{empty_scores, ScoreBatch, Scores};
use crate::transformer::Positions;

/// Memory options of [`Policy::train_pass`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrainMemory {
    /// Recompute each decoder layer's activations in the backward step (gradient
    /// checkpointing): the forward pass keeps only each layer's input [b·t, d], and the
    /// backward step runs one layer at a time. Costs one extra forward pass; gradients are the
    /// same (the same kernels run on the same inputs).
    pub recompute: bool,
}

/// The forward half of a training step: [`TrainPass::scores`] carry a graph; build the loss
/// from them and call [`TrainPass::backward`].
pub struct TrainPass<'p> {
    policy: &'p Policy,
    scores: Scores,
    recompute: Option<Recompute>,
}

/// What the layer-by-layer backward step needs.
struct Recompute {
    ids: Tensor,
    bt: (usize, usize),
    /// Input of each layer, then the final residual stream: layers + 1 tensors [b·t, d].
    inputs: Vec<Tensor>,
    /// The leaf the scores hang from (a copy of the last of `inputs`).
    top: Var,
    /// The dropout generator's state before each layer.
    rng: Vec<ChaCha8Rng>,
}

impl Policy {
    /// Scores `sequences[i][start[i]..]` like [`Policy::score_with`] in [`crate::ScoreMode::TRAIN`]
    /// (gradient, adapter on), for one micro-batch of training.
    ///
    /// Build the loss from [`TrainPass::scores`] and call [`TrainPass::backward`]: it returns the
    /// gradients of [`Policy::trainable_vars`] only and drops the graph, so nothing of this
    /// micro-batch outlives it. With `memory.recompute` the forward pass keeps only each
    /// layer's input.
    pub fn train_pass(
        &self,
        sequences: &[Vec<u32>],
        start: &[usize],
        processing: &LogitProcessing,
        memory: TrainMemory,
    ) -> Result<TrainPass<'_>> {
        processing.validate()?;
        let (batch, lengths) = ScoreBatch::new(self, sequences, start)?;
        let Some(batch) = batch else {
            let scores = empty_scores(lengths, &self.device)?;
            return Ok(TrainPass {
                policy: self,
                scores,
                recompute: None,
            });
        };
        let ctx = Ctx {
            grad: true,
            adapter: true,
            dropout_rng: Some(&self.dropout_rng),
        };
        if !memory.recompute {
            let h = self.model.causal_hidden(&batch.ids, &ctx)?;
            let scores = batch.scores(self, &h, &ctx, processing)?;
            return Ok(TrainPass {
                policy: self,
                scores,
                recompute: None,
            });
        }
        let (b, t, _) = batch.dims;
        let rope = self.model.rope_rows(Positions::Range(0), b, t)?;
        let mut x = self.model.embed_rows(&batch.ids, &ctx)?.detach();
        let (mut inputs, mut rng) = (Vec::new(), Vec::new());
        for i in 0..self.model.layers.len() {
            rng.push(self.dropout_state());
            let y = self
                .model
                .layer(i, &x, (b, t), &rope, AttnMask::Causal, None, &ctx)?;
            inputs.push(x);
            x = y.detach();
        }
        let top = Var::from_tensor(&x)?;
        inputs.push(x);
        let h = self.model.final_norm(top.as_tensor(), (b, t), &ctx)?;
        let ids = batch.ids.clone();
        let scores = batch.scores(self, &h, &ctx, processing)?;
        Ok(TrainPass {
            policy: self,
            scores,
            recompute: Some(Recompute {
                ids,
                bt: (b, t),
                inputs,
                top,
                rng,
            }),
        })
    }

    fn dropout_state(&self) -> ChaCha8Rng {
        self.dropout_rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl TrainPass<'_> {
    /// The scores, with a graph back to the trainable variables.
    pub fn scores(&self) -> &Scores {
        &self.scores
    }

    /// Back-propagates `loss` (a scalar built from [`TrainPass::scores`]) and returns the
    /// gradients of the trainable variables, nothing else; the graph is dropped.
    pub fn backward(self, loss: &Tensor) -> Result<GradStore> {
        if loss.elem_count() != 1 {
            return Err(ModelError::arg(
                "loss",
                format!("shape {:?}, expected a scalar", loss.dims()),
            ));
        }
        let mut out = GradStore::default();
        let all = loss.backward()?;
        self.policy.collect_grads(&mut out, &all)?;
        let Some(rc) = self.recompute else {
            return Ok(out);
        };
        let Some(mut d) = all.get(rc.top.as_tensor()).cloned() else {
            return Ok(out);
        };
        drop(all);
        let model = &self.policy.model;
        let (b, t) = rc.bt;
        let rope = model.rope_rows(Positions::Range(0), b, t)?;
        for i in (0..model.layers.len()).rev() {
            let leaf = Var::from_tensor(&rc.inputs[i])?;
            let rng = Mutex::new(rc.rng[i].clone());
            let ctx = Ctx {
                grad: true,
                adapter: true,
                dropout_rng: Some(&rng),
            };
            let y = model.layer(
                i,
                leaf.as_tensor(),
                (b, t),
                &rope,
                AttnMask::Causal,
                None,
                &ctx,
            )?;
            let g = (y * &d)?.sum_all()?.backward()?;
            self.policy.collect_grads(&mut out, &g)?;
            d = match g.get(leaf.as_tensor()) {
                Some(gx) => gx.clone(),
                None => return Ok(out),
            };
        }
        let ctx = Ctx {
            grad: true,
            adapter: true,
            dropout_rng: None,
        };
        let x0 = model.embed_rows(&rc.ids, &ctx)?;
        if x0.track_op() {
            let g = (x0 * &d)?.sum_all()?.backward()?;
            self.policy.collect_grads(&mut out, &g)?;
        }
        Ok(out)
    }
}

impl Policy {
    /// Adds the gradients in `from` of the trainable variables into `out`.
    fn collect_grads(&self, out: &mut GradStore, from: &GradStore) -> Result<()> {
        for (_, v) in &self.trainable {
            if let Some(g) = from.get(v.as_tensor()) {
                let sum = match out.get(v.as_tensor()) {
                    Some(acc) => (acc + g)?,
                    None => g.clone(),
                };
                out.insert(v.as_tensor(), sum);
            }
        }
        Ok(())
    }
}
