//! The decoder (Qwen2 / Llama layout) written with candle tensor ops.

use candle_core::Tensor;
use candle_nn::kv_cache::KvCache;

use crate::attention::{attention, AttnMask};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::lora::{Ctx, Linear, TargetModule};
use crate::ops;

/// One decoder layer (its weights are listed, named and shaped in `weights.rs`).
#[derive(Clone)]
pub(crate) struct Layer {
    /// Gain of the norm before attention [d].
    pub input_norm: Tensor,
    /// Gain of the norm before the MLP [d].
    pub post_norm: Tensor,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl Layer {
    /// The projection `t`.
    pub fn proj(&self, t: TargetModule) -> &Linear {
        match t {
            TargetModule::QProj => &self.q,
            TargetModule::KProj => &self.k,
            TargetModule::VProj => &self.v,
            TargetModule::OProj => &self.o,
            TargetModule::GateProj => &self.gate,
            TargetModule::UpProj => &self.up,
            TargetModule::DownProj => &self.down,
        }
    }

    /// The projection `t`, to change.
    pub fn proj_mut(&mut self, t: TargetModule) -> &mut Linear {
        match t {
            TargetModule::QProj => &mut self.q,
            TargetModule::KProj => &mut self.k,
            TargetModule::VProj => &mut self.v,
            TargetModule::OProj => &mut self.o,
            TargetModule::GateProj => &mut self.gate,
            TargetModule::UpProj => &mut self.up,
            TargetModule::DownProj => &mut self.down,
        }
    }

    /// The seven projections, to change, in [`TargetModule::ALL`]'s order.
    pub fn linears_mut(&mut self) -> [&mut Linear; 7] {
        let Layer {
            q,
            k,
            v,
            o,
            gate,
            up,
            down,
            ..
        } = self;
        [q, k, v, o, gate, up, down]
    }
}

/// Rotary positions of a forward pass.
pub(crate) enum Positions<'a> {
    /// Positions `start..start+len`, the same for every row.
    Range(usize),
    /// One position per token, row-major [batch·seq] u32.
    PerToken(&'a Tensor),
}

/// The decoder: embedding, layers, final norm, output projection.
#[derive(Clone)]
pub(crate) struct Transformer {
    pub cfg: ModelConfig,
    /// Token embedding [vocab, d].
    pub embed: Tensor,
    pub layers: Vec<Layer>,
    /// Gain of the final norm [d].
    pub norm: Tensor,
    /// Output projection [vocab, d]; `None` when tied to the embedding.
    pub lm_head: Option<Tensor>,
    /// Rotary tables [max_positions, hd/2].
    pub cos: Tensor,
    pub sin: Tensor,
}

impl Transformer {
    /// Every projection of every layer, to change.
    pub fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        self.layers.iter_mut().flat_map(Layer::linears_mut)
    }

    /// The model with each adapter folded into its projection (W + (α/r)·B·A) and removed.
    pub fn merged(&self) -> Result<Self> {
        let mut m = self.clone();
        for lin in m.linears_mut() {
            lin.weight = lin.merged_weight()?;
            lin.adapter = None;
        }
        Ok(m)
    }

    /// Hidden states [b, t, d] of whole sequences `ids` [b, t] u32 from position 0 under a
    /// causal mask, without a cache.
    pub fn causal_hidden(&self, ids: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.hidden(ids, Positions::Range(0), AttnMask::Causal, None, ctx)
    }

    /// Hidden states after the final norm: `ids` [b, t] u32 → [b, t, d].
    ///
    /// `mask`: which keys each query sees. `cache`: one KV cache per layer, appended to.
    pub fn hidden(
        &self,
        ids: &Tensor,
        pos: Positions,
        mask: AttnMask,
        mut cache: Option<&mut [KvCache]>,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let rope = self.rope_rows(pos, b, t)?;
        let mut x = self.embed_rows(ids, ctx)?;
        for i in 0..self.layers.len() {
            let kv = cache.as_deref_mut().map(|c| &mut c[i]);
            x = self.layer(i, &x, (b, t), &rope, mask, kv, ctx)?;
        }
        self.final_norm(&x, (b, t), ctx)
    }

    /// Cos/sin rows of a pass over [b, t] tokens: [t, hd/2] or [b, t, hd/2] each.
    pub fn rope_rows(&self, pos: Positions, b: usize, t: usize) -> Result<(Tensor, Tensor)> {
        let half = self.cfg.head_dim / 2;
        Ok(match pos {
            Positions::Range(start) => {
                (self.cos.narrow(0, start, t)?, self.sin.narrow(0, start, t)?)
            }
            Positions::PerToken(p) => (
                self.cos.index_select(p, 0)?.reshape((b, t, half))?,
                self.sin.index_select(p, 0)?.reshape((b, t, half))?,
            ),
        })
    }

    /// Embedding rows of `ids` [b, t]: [b·t, d].
    pub fn embed_rows(&self, ids: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        Ok(ctx.w(&self.embed).index_select(&ids.flatten_all()?, 0)?)
    }

    /// Final norm of the residual stream [b·t, d] → [b, t, d].
    pub fn final_norm(&self, x: &Tensor, (b, t): (usize, usize), ctx: &Ctx) -> Result<Tensor> {
        let x = ops::rms_norm(x, &ctx.w(&self.norm), self.cfg.rms_norm_eps, ctx.grad)?;
        Ok(x.reshape((b, t, self.cfg.hidden_size))?)
    }

    /// Decoder layer `i` on the residual stream `x` [b·t, d] → [b·t, d].
    #[allow(clippy::too_many_arguments)]
    pub fn layer(
        &self,
        i: usize,
        x: &Tensor,
        bt: (usize, usize),
        rope: &(Tensor, Tensor),
        mask: AttnMask,
        cache: Option<&mut KvCache>,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        let layer = &self.layers[i];
        let eps = self.cfg.rms_norm_eps;
        let h = ops::rms_norm(x, &ctx.w(&layer.input_norm), eps, ctx.grad)?;
        let a = self.attention(layer, &h, bt, (&rope.0, &rope.1), mask, cache, ctx)?;
        let x = (x + a)?;
        let h = ops::rms_norm(&x, &ctx.w(&layer.post_norm), eps, ctx.grad)?;
        let m = ops::swiglu(&layer.gate.forward(&h, ctx)?, &layer.up.forward(&h, ctx)?)?;
        Ok((x + layer.down.forward(&m, ctx)?)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: &Layer,
        h: &Tensor,
        (b, t): (usize, usize),
        (cos, sin): (&Tensor, &Tensor),
        mask: AttnMask,
        cache: Option<&mut KvCache>,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let hd = c.head_dim;
        let heads = |x: Tensor, n: usize| -> Result<Tensor> {
            Ok(x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(layer.q.forward(h, ctx)?, c.num_heads)?;
        let k = heads(layer.k.forward(h, ctx)?, c.num_kv_heads)?;
        let v = heads(layer.v.forward(h, ctx)?, c.num_kv_heads)?;
        let q = ops::rope(&q, cos, sin, ctx.grad)?;
        let k = ops::rope(&k, cos, sin, ctx.grad)?;
        let (k, v) = match cache {
            Some(cache) => cache.append(&k, &v)?,
            None => (k, v),
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let y = attention(&q, &k, &v, mask, scale)?; // [b, heads, t, hd]
        let y = y.transpose(1, 2)?.reshape((b * t, c.num_heads * hd))?;
        layer.o.forward(&y, ctx)
    }

    /// The output projection [vocab, d] as this pass uses it.
    pub fn head_weight(&self, ctx: &Ctx) -> Tensor {
        ctx.w(self.lm_head.as_ref().unwrap_or(&self.embed))
    }

    /// Logits [n, vocab] of hidden rows [n, d].
    pub fn logits(&self, rows: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        ops::matmul_t(rows, &self.head_weight(ctx))
    }
}
