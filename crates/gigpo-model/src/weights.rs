//! The weights of the decoder: each one's role, names (Hugging Face and GGUF), shape and
//! initialisation, and the one walk over them that building, mapping and naming use.
//!
//! A new tensor of the architecture is a new [`Role`] (its names and initialisation are
//! matched exhaustively below), a field of [`Transformer`] or [`Layer`], and one line of
//! [`Transformer::walk`].

use candle_core::{Device, Tensor};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::lora::{Linear, TargetModule};
use crate::ops;
use crate::transformer::{Layer, Transformer};

/// How a weight is created when a model is built without a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Init {
    /// Normal with mean 0 (the standard deviation is the builder's).
    Normal,
    /// All ones (norm gains).
    Ones,
    /// All zeros (biases).
    Zeros,
}

/// What a weight is in the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// The token embedding [vocab, d].
    Embedding,
    /// The gain of layer `layer`'s norm before attention [d].
    InputNorm { layer: usize },
    /// The gain of layer `layer`'s norm before the MLP [d].
    PostNorm { layer: usize },
    /// The matrix [out, in] of a projection of layer `layer`.
    Weight { layer: usize, proj: TargetModule },
    /// The bias [out] of a projection of layer `layer`.
    Bias { layer: usize, proj: TargetModule },
    /// The gain of the final norm [d].
    FinalNorm,
    /// The output projection [vocab, d], absent when tied to the embedding.
    LmHead,
}

impl Role {
    /// The Hugging Face module path (`model.layers.3.self_attn.q_proj`, `lm_head`).
    pub fn module(self) -> String {
        match self {
            Role::Embedding => "model.embed_tokens".into(),
            Role::InputNorm { layer } => format!("model.layers.{layer}.input_layernorm"),
            Role::PostNorm { layer } => format!("model.layers.{layer}.post_attention_layernorm"),
            Role::Weight { layer, proj } | Role::Bias { layer, proj } => {
                format!("model.layers.{layer}.{}", proj.path())
            }
            Role::FinalNorm => "model.norm".into(),
            Role::LmHead => "lm_head".into(),
        }
    }

    /// The Hugging Face tensor name (`model.layers.3.self_attn.q_proj.weight`).
    pub fn hf_name(self) -> String {
        format!("{}.{}", self.module(), self.param())
    }

    /// llama.cpp's tensor name in a GGUF file (`blk.3.attn_q.weight`).
    pub fn gguf_name(self) -> String {
        let param = self.param();
        match self {
            Role::Embedding => "token_embd.weight".into(),
            Role::InputNorm { layer } => format!("blk.{layer}.attn_norm.weight"),
            Role::PostNorm { layer } => format!("blk.{layer}.ffn_norm.weight"),
            Role::Weight { layer, proj } | Role::Bias { layer, proj } => {
                format!("blk.{layer}.{}.{param}", gguf_proj(proj))
            }
            Role::FinalNorm => "output_norm.weight".into(),
            Role::LmHead => "output.weight".into(),
        }
    }

    /// How the weight starts in a model built without a checkpoint.
    pub fn init(self) -> Init {
        match self {
            Role::Embedding | Role::Weight { .. } | Role::LmHead => Init::Normal,
            Role::InputNorm { .. } | Role::PostNorm { .. } | Role::FinalNorm => Init::Ones,
            Role::Bias { .. } => Init::Zeros,
        }
    }

    /// The projection a matrix or bias belongs to.
    pub fn proj(self) -> Option<TargetModule> {
        match self {
            Role::Weight { proj, .. } | Role::Bias { proj, .. } => Some(proj),
            _ => None,
        }
    }

    fn param(self) -> &'static str {
        match self {
            Role::Bias { .. } => "bias",
            _ => "weight",
        }
    }
}

/// llama.cpp's short name of a projection.
fn gguf_proj(t: TargetModule) -> &'static str {
    match t {
        TargetModule::QProj => "attn_q",
        TargetModule::KProj => "attn_k",
        TargetModule::VProj => "attn_v",
        TargetModule::OProj => "attn_output",
        TargetModule::GateProj => "ffn_gate",
        TargetModule::UpProj => "ffn_up",
        TargetModule::DownProj => "ffn_down",
    }
}

/// One weight of the architecture: what it is and its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WeightSpec {
    /// What the weight is.
    pub role: Role,
    /// Its shape.
    pub shape: Vec<usize>,
}

impl WeightSpec {
    /// The Hugging Face tensor name.
    pub fn name(&self) -> String {
        self.role.hf_name()
    }
}

/// Provides each weight of a model being built (from a file or freshly initialised).
pub(crate) type WeightSource<'a> = dyn FnMut(&WeightSpec) -> Result<Tensor> + 'a;

/// Replaces each weight of a model: given the weight and its current tensor, returns the new one.
pub(crate) type WeightMap<'a> = dyn FnMut(&WeightSpec, &Tensor) -> Result<Tensor> + 'a;

/// What [`Transformer::walk`] asks for each weight: its spec and, when an existing model is
/// walked, its current tensor.
type Visit<'a> = dyn FnMut(&WeightSpec, Option<&Tensor>) -> Result<Tensor> + 'a;

/// Shape (out, in) of a projection and whether it has a bias.
fn proj_shape(cfg: &ModelConfig, t: TargetModule) -> (usize, usize, bool) {
    let (d, ff) = (cfg.hidden_size, cfg.intermediate_size);
    let (qd, kvd) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
    );
    match t {
        TargetModule::QProj => (qd, d, cfg.qkv_bias),
        TargetModule::KProj | TargetModule::VProj => (kvd, d, cfg.qkv_bias),
        TargetModule::OProj => (d, qd, cfg.o_bias),
        TargetModule::GateProj | TargetModule::UpProj => (ff, d, cfg.mlp_bias),
        TargetModule::DownProj => (d, ff, cfg.mlp_bias),
    }
}

/// One step of the walk: the weight `role` of `shape`, currently `old` if a model is walked.
fn visit(f: &mut Visit, role: Role, shape: &[usize], old: Option<&Tensor>) -> Result<Tensor> {
    let spec = WeightSpec {
        role,
        shape: shape.to_vec(),
    };
    f(&spec, old)
}

/// The projection `proj` of layer `layer`: its matrix, then its bias if it has one. An
/// adapter of the old projection is kept.
fn linear(
    f: &mut Visit,
    cfg: &ModelConfig,
    (layer, proj): (usize, TargetModule),
    old: Option<&Linear>,
) -> Result<Linear> {
    let (out, inp, has_bias) = proj_shape(cfg, proj);
    let weight = visit(
        f,
        Role::Weight { layer, proj },
        &[out, inp],
        old.map(|l| &l.weight),
    )?;
    let bias = if has_bias {
        let old = old.and_then(|l| l.bias.as_ref());
        Some(visit(f, Role::Bias { layer, proj }, &[out], old)?)
    } else {
        None
    };
    Ok(Linear {
        weight,
        bias,
        adapter: old.and_then(|l| l.adapter.clone()),
    })
}

/// Decoder layer `i`: its two norms, then the seven projections in [`TargetModule::ALL`]'s
/// order.
fn layer(f: &mut Visit, cfg: &ModelConfig, i: usize, old: Option<&Layer>) -> Result<Layer> {
    let d = cfg.hidden_size;
    let input_norm = visit(
        f,
        Role::InputNorm { layer: i },
        &[d],
        old.map(|l| &l.input_norm),
    )?;
    let post_norm = visit(
        f,
        Role::PostNorm { layer: i },
        &[d],
        old.map(|l| &l.post_norm),
    )?;
    let mut proj = |t: TargetModule| linear(f, cfg, (i, t), old.map(|l| l.proj(t)));
    Ok(Layer {
        input_norm,
        post_norm,
        q: proj(TargetModule::QProj)?,
        k: proj(TargetModule::KProj)?,
        v: proj(TargetModule::VProj)?,
        o: proj(TargetModule::OProj)?,
        gate: proj(TargetModule::GateProj)?,
        up: proj(TargetModule::UpProj)?,
        down: proj(TargetModule::DownProj)?,
    })
}

impl Transformer {
    /// The one walk over every weight of the decoder `cfg` describes, in a fixed order
    /// (embedding; per layer its norms, then each projection's matrix and bias; final norm;
    /// output projection): the order of [`Transformer::named_weights`], of the trainable
    /// variables and of random initialisation. Builds a model of what `f` returns for each
    /// weight; `old`, when given, is the model walked (its tensors are passed to `f`, its
    /// adapters and rotary tables kept).
    fn walk(
        cfg: &ModelConfig,
        device: &Device,
        old: Option<&Transformer>,
        f: &mut Visit,
    ) -> Result<Self> {
        let (v, d) = (cfg.vocab_size, cfg.hidden_size);
        let embed = visit(f, Role::Embedding, &[v, d], old.map(|m| &m.embed))?;
        let layers = (0..cfg.num_layers)
            .map(|i| layer(f, cfg, i, old.map(|m| &m.layers[i])))
            .collect::<Result<Vec<_>>>()?;
        let norm = visit(f, Role::FinalNorm, &[d], old.map(|m| &m.norm))?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            let old = old.and_then(|m| m.lm_head.as_ref());
            Some(visit(f, Role::LmHead, &[v, d], old)?)
        };
        let (cos, sin) = match old {
            Some(m) => (m.cos.clone(), m.sin.clone()),
            None => ops::rope_tables(cfg, device)?,
        };
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

    /// Builds the model, asking `src` for every weight.
    pub fn build(cfg: &ModelConfig, device: &Device, src: &mut WeightSource) -> Result<Self> {
        cfg.validate()?;
        Self::walk(cfg, device, None, &mut |spec, _| src(spec))
    }

    /// Applies `f` to every base weight (adapters excluded, and kept), in the order of
    /// [`Transformer::named_weights`].
    pub fn map_weights(&self, f: &mut WeightMap) -> Result<Self> {
        let device = self.embed.device().clone();
        Self::walk(&self.cfg, &device, Some(self), &mut |spec, old| {
            f(spec, old.expect("a walked model holds every weight"))
        })
    }

    /// Every base weight with its Hugging Face name (adapters excluded), in a fixed order.
    pub fn named_weights(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        self.map_weights(&mut |spec, t| {
            out.push((spec.name(), t.clone()));
            Ok(t.clone())
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_both_layouts() {
        let q = Role::Weight {
            layer: 3,
            proj: TargetModule::QProj,
        };
        assert_eq!(q.hf_name(), "model.layers.3.self_attn.q_proj.weight");
        assert_eq!(q.gguf_name(), "blk.3.attn_q.weight");
        let b = Role::Bias {
            layer: 0,
            proj: TargetModule::DownProj,
        };
        assert_eq!(b.hf_name(), "model.layers.0.mlp.down_proj.bias");
        assert_eq!(b.gguf_name(), "blk.0.ffn_down.bias");
        let n = Role::PostNorm { layer: 1 };
        assert_eq!(
            n.hf_name(),
            "model.layers.1.post_attention_layernorm.weight"
        );
        assert_eq!(n.gguf_name(), "blk.1.ffn_norm.weight");
        assert_eq!(Role::LmHead.gguf_name(), "output.weight");
        assert_eq!(Role::Embedding.hf_name(), "model.embed_tokens.weight");
    }
}
