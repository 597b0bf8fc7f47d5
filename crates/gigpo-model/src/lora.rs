//! Low-rank adapters (LoRA) and the linear layer that carries them.

use std::sync::Mutex;

use candle_core::{DType, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::attach::attach3;
use crate::error::{ModelError, Result};

/// A projection that can carry a LoRA adapter (PEFT's `target_modules` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetModule {
    /// Attention query projection `self_attn.q_proj`.
    QProj,
    /// Attention key projection `self_attn.k_proj`.
    KProj,
    /// Attention value projection `self_attn.v_proj`.
    VProj,
    /// Attention output projection `self_attn.o_proj`.
    OProj,
    /// MLP gate projection `mlp.gate_proj`.
    GateProj,
    /// MLP up projection `mlp.up_proj`.
    UpProj,
    /// MLP down projection `mlp.down_proj`.
    DownProj,
}

impl TargetModule {
    /// All seven projections.
    pub const ALL: [TargetModule; 7] = [
        TargetModule::QProj,
        TargetModule::KProj,
        TargetModule::VProj,
        TargetModule::OProj,
        TargetModule::GateProj,
        TargetModule::UpProj,
        TargetModule::DownProj,
    ];

    /// The PEFT / transformers module name (`q_proj`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TargetModule::QProj => "q_proj",
            TargetModule::KProj => "k_proj",
            TargetModule::VProj => "v_proj",
            TargetModule::OProj => "o_proj",
            TargetModule::GateProj => "gate_proj",
            TargetModule::UpProj => "up_proj",
            TargetModule::DownProj => "down_proj",
        }
    }

    /// The path of this projection inside a decoder layer (`self_attn.q_proj`, `mlp.up_proj`).
    pub fn path(self) -> &'static str {
        match self {
            TargetModule::QProj => "self_attn.q_proj",
            TargetModule::KProj => "self_attn.k_proj",
            TargetModule::VProj => "self_attn.v_proj",
            TargetModule::OProj => "self_attn.o_proj",
            TargetModule::GateProj => "mlp.gate_proj",
            TargetModule::UpProj => "mlp.up_proj",
            TargetModule::DownProj => "mlp.down_proj",
        }
    }

    /// Parses a PEFT module name.
    pub fn from_name(name: &str) -> Option<Self> {
        TargetModule::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// LoRA hyper-parameters. The update of a projection W is (α / r)·B·A with A: [r, in]
/// initialised uniformly in ±1/√in (PEFT's Kaiming-uniform with a = √5) and B: [out, r] zero,
/// so a fresh adapter leaves the model unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank r (default 8).
    pub rank: usize,
    /// Scale numerator α (default 16); the update is scaled by α / r.
    pub alpha: f64,
    /// Dropout probability on the adapter's input while training with gradient (default 0).
    pub dropout: f64,
    /// Projections that get an adapter (default: all seven).
    pub target_modules: Vec<TargetModule>,
    /// Seed of A's initialisation and of the dropout masks (default 0).
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: TargetModule::ALL.to_vec(),
            seed: 0,
        }
    }
}

impl LoraConfig {
    /// Checks ranges: rank ≥ 1, α > 0, 0 ≤ dropout < 1, at least one target.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(ModelError::config("lora.rank", "must be at least 1"));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(ModelError::config(
                "lora.alpha",
                "must be a positive number",
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::config("lora.dropout", "must be in [0, 1)"));
        }
        if self.target_modules.is_empty() {
            return Err(ModelError::config(
                "lora.target_modules",
                "must name at least one projection",
            ));
        }
        Ok(())
    }

    /// α / r.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// One adapter: A [r, in], B [out, r].
#[derive(Clone)]
pub(crate) struct Adapter {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
    pub dropout: f64,
}

/// How a forward pass runs: gradient recording, adapter on/off, dropout randomness.
pub(crate) struct Ctx<'a> {
    pub grad: bool,
    pub adapter: bool,
    pub dropout_rng: Option<&'a Mutex<ChaCha8Rng>>,
}

impl Ctx<'_> {
    /// A weight as this pass uses it: detached (no graph) without gradient.
    pub fn w(&self, t: &Tensor) -> Tensor {
        if self.grad {
            t.clone()
        } else {
            t.detach()
        }
    }
}

/// y = x·Wᵀ + b (+ (α/r)·dropout(x)·Aᵀ·Bᵀ when the adapter is on).
#[derive(Clone)]
pub(crate) struct Linear {
    /// W [out, in].
    pub weight: Tensor,
    /// b [out], when the projection has one.
    pub bias: Option<Tensor>,
    /// The LoRA adapter, when the model has one on this projection.
    pub adapter: Option<Adapter>,
}

impl Linear {
    /// `x`: [n, in] → [n, out].
    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let ad = self.adapter.as_ref().filter(|_| ctx.adapter);
        if let Some(ad) = ad {
            if ctx.grad && ad.dropout == 0.0 && fused_applies(x, &self.weight) {
                return self.forward_fused(x, ad);
            }
        }
        let mut y = crate::ops::matmul_t(x, &ctx.w(&self.weight))?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&ctx.w(b))?;
        }
        if let Some(ad) = ad {
            let xin = match (ad.dropout > 0.0, ctx.dropout_rng) {
                (true, Some(rng)) => dropout(
                    x,
                    ad.dropout,
                    &mut rng.lock().unwrap_or_else(|e| e.into_inner()),
                )?,
                _ => x.clone(),
            };
            let a = ctx.w(ad.a.as_tensor());
            let b = ctx.w(ad.b.as_tensor());
            let low = (xin.matmul(&a.t()?)? * ad.scale)?.matmul(&b.t()?)?;
            y = (y + low)?;
        }
        Ok(y)
    }

    /// x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ as one graph node over (x, A, B) with a frozen W: the backward
    /// step computes no gradient for W and keeps no intermediate.
    fn forward_fused(&self, x: &Tensor, ad: &Adapter) -> Result<Tensor> {
        let (w, bias, s) = (
            self.weight.detach(),
            self.bias.as_ref().map(Tensor::detach),
            ad.scale,
        );
        let (a, b) = (ad.a.as_tensor(), ad.b.as_tensor());
        let xd = x.detach();
        let mut y = (xd.matmul(&w.t()?)?
            + (xd.matmul(&a.detach().t()?)? * s)?.matmul(&b.detach().t()?)?)?;
        if let Some(bias) = &bias {
            y = y.broadcast_add(bias)?;
        }
        Ok(attach3(
            "lora-linear",
            y,
            (x, a, b),
            move |[x, a, b], need, g| {
                let g_b = g.matmul(b)?; // [n, r]
                let dx = match need[0] {
                    true => Some((g.matmul(&w)? + (g_b.matmul(a)? * s)?)?),
                    false => None,
                };
                let da = match need[1] {
                    true => Some((g_b.t()?.matmul(x)? * s)?),
                    false => None,
                };
                let db = match need[2] {
                    true => Some(g.t()?.matmul(&(x.matmul(&a.t()?)? * s)?)?),
                    false => None,
                };
                Ok([dx, da, db])
            },
        )?)
    }

    /// W + (α/r)·B·A (the weight with the adapter folded in).
    pub fn merged_weight(&self) -> Result<Tensor> {
        match &self.adapter {
            None => Ok(self.weight.clone()),
            Some(ad) => {
                let delta = (ad.b.as_tensor().matmul(ad.a.as_tensor())? * ad.scale)?;
                Ok((&self.weight + delta.to_dtype(self.weight.dtype())?)?)
            }
        }
    }
}

/// Inverted dropout with a mask drawn from `rng`.
fn dropout(x: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let keep = 1.0 / (1.0 - p);
    let n = x.elem_count();
    let mask: Vec<f32> = (0..n)
        .map(|_| {
            if rng.random::<f64>() < p {
                0.0
            } else {
                keep as f32
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}

/// Whether the fused LoRA op applies: CPU, f32, a frozen base weight.
fn fused_applies(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && !w.track_op()
}

/// A fresh adapter for a [out, in] weight: A uniform in ±1/√in from `rng`, B zero.
pub(crate) fn new_adapter(
    weight: &Tensor,
    cfg: &LoraConfig,
    rng: &mut ChaCha8Rng,
) -> Result<Adapter> {
    let (out, inp) = weight.dims2()?;
    let bound = 1.0 / (inp as f64).sqrt();
    let a: Vec<f32> = (0..cfg.rank * inp)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect();
    let a = Tensor::from_vec(a, (cfg.rank, inp), weight.device())?.to_dtype(DType::F32)?;
    let b = Tensor::zeros((out, cfg.rank), DType::F32, weight.device())?;
    Ok(Adapter {
        a: Var::from_tensor(&a)?,
        b: Var::from_tensor(&b)?,
        scale: cfg.scale(),
        dropout: cfg.dropout,
    })
}
