//! The decoder (Qwen2 / Llama layout) written with candle tensor ops.

use candle_core::{Device, Tensor};
use candle_nn::kv_cache::KvCache;

use crate::attention::{attention, AttnMask};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::lora::{Ctx, Linear, TargetModule};
use crate::ops;

/// How a weight is created when building a model.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Init {
    /// Normal with mean 0 (the standard deviation is the builder's).
    Normal,
    /// All ones (norm gains).
    Ones,
    /// All zeros (biases).
    Zeros,
}

/// Provides the tensor called `name` with `shape` (from a file or freshly initialised).
pub(crate) type WeightSource<'a> = dyn FnMut(&str, &[usize], Init) -> Result<Tensor> + 'a;

/// One decoder layer.
#[derive(Clone)]
pub(crate) struct Layer {
    pub input_norm: Tensor,
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
    pub embed: Tensor,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    /// `None` when tied to the embedding.
    pub lm_head: Option<Tensor>,
    pub cos: Tensor,
    pub sin: Tensor,
}

fn linear(
    src: &mut WeightSource,
    name: &str,
    out: usize,
    inp: usize,
    bias: bool,
) -> Result<Linear> {
    let w = src(&format!("{name}.weight"), &[out, inp], Init::Normal)?;
    let b = if bias {
        Some(src(&format!("{name}.bias"), &[out], Init::Zeros)?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

impl Transformer {
    /// Builds the model, asking `src` for every weight by its Hugging Face name.
    pub fn build(cfg: &ModelConfig, device: &Device, src: &mut WeightSource) -> Result<Self> {
        cfg.validate()?;
        let (d, hd) = (cfg.hidden_size, cfg.head_dim);
        let embed = src(
            "model.embed_tokens.weight",
            &[cfg.vocab_size, d],
            Init::Normal,
        )?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}");
            let qd = cfg.num_heads * hd;
            let kvd = cfg.num_kv_heads * hd;
            layers.push(Layer {
                input_norm: src(&format!("{p}.input_layernorm.weight"), &[d], Init::Ones)?,
                post_norm: src(
                    &format!("{p}.post_attention_layernorm.weight"),
                    &[d],
                    Init::Ones,
                )?,
                q: linear(src, &format!("{p}.self_attn.q_proj"), qd, d, cfg.qkv_bias)?,
                k: linear(src, &format!("{p}.self_attn.k_proj"), kvd, d, cfg.qkv_bias)?,
                v: linear(src, &format!("{p}.self_attn.v_proj"), kvd, d, cfg.qkv_bias)?,
                o: linear(src, &format!("{p}.self_attn.o_proj"), d, qd, cfg.o_bias)?,
                gate: linear(
                    src,
                    &format!("{p}.mlp.gate_proj"),
                    cfg.intermediate_size,
                    d,
                    cfg.mlp_bias,
                )?,
                up: linear(
                    src,
                    &format!("{p}.mlp.up_proj"),
                    cfg.intermediate_size,
                    d,
                    cfg.mlp_bias,
                )?,
                down: linear(
                    src,
                    &format!("{p}.mlp.down_proj"),
                    d,
                    cfg.intermediate_size,
                    cfg.mlp_bias,
                )?,
            });
        }
        let norm = src("model.norm.weight", &[d], Init::Ones)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(src("lm_head.weight", &[cfg.vocab_size, d], Init::Normal)?)
        };
        let (cos, sin) = ops::rope_tables(cfg, device)?;
        Ok(Transformer {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
        })
    }

    /// Every base weight with its Hugging Face name (adapters excluded), in a fixed order.
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed.clone())];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm.weight"), l.input_norm.clone()));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                l.post_norm.clone(),
            ));
            for t in TargetModule::ALL {
                let lin = l.proj(t);
                out.push((format!("{p}.{}.weight", t.path()), lin.weight.clone()));
                if let Some(b) = &lin.bias {
                    out.push((format!("{p}.{}.bias", t.path()), b.clone()));
                }
            }
        }
        out.push(("model.norm.weight".to_string(), self.norm.clone()));
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), h.clone()));
        }
        out
    }

    /// Applies `f` to every base weight (adapters excluded), in the order of `named_weights`.
    pub fn map_weights(&self, f: &mut dyn FnMut(&str, &Tensor) -> Result<Tensor>) -> Result<Self> {
        let mut m = self.clone();
        m.embed = f("model.embed_tokens.weight", &self.embed)?;
        for (i, l) in m.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            l.input_norm = f(&format!("{p}.input_layernorm.weight"), &l.input_norm)?;
            l.post_norm = f(
                &format!("{p}.post_attention_layernorm.weight"),
                &l.post_norm,
            )?;
            for t in TargetModule::ALL {
                let lin = l.proj_mut(t);
                lin.weight = f(&format!("{p}.{}.weight", t.path()), &lin.weight)?;
                if let Some(b) = &lin.bias {
                    lin.bias = Some(f(&format!("{p}.{}.bias", t.path()), b)?);
                }
            }
        }
        m.norm = f("model.norm.weight", &self.norm)?;
        if let Some(h) = &self.lm_head {
            m.lm_head = Some(f("lm_head.weight", h)?);
        }
        Ok(m)
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
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        Ok(rows.matmul(&ctx.w(head).t()?)?)
    }
}

/// Additive causal mask [t, t]: 0 on and below the diagonal, −∞ above.
pub(crate) fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Ok(Tensor::from_vec(data, (t, t), device)?)
}

/// Additive mask [b, 1, t, t_kv] for left-padded rows: query i (absolute index `past + i`) sees
/// key j when j ≤ past + i and j is not padding; padding queries see themselves only.
pub(crate) fn padded_mask(
    pads: &[usize],
    past: usize,
    t: usize,
    device: &Device,
) -> Result<Tensor> {
    let kv = past + t;
    let mut data = Vec::with_capacity(pads.len() * t * kv);
    for &pad in pads {
        for i in 0..t {
            let qi = past + i;
            for j in 0..kv {
                let ok = j <= qi && (j >= pad || j == qi);
                data.push(if ok { 0.0 } else { f32::NEG_INFINITY });
            }
        }
    }
    Ok(Tensor::from_vec(data, (pads.len(), 1, t, kv), device)?)
}
