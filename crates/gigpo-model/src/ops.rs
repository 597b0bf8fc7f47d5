//! Building blocks of the forward pass.
//!
//! Each op has two paths: with `grad` set, it is written with ops that record a backward step
//! (candle's fused `rms_norm`, `softmax_last_dim` and `rope` record none); without, the fused
//! kernels are used for speed.

use candle_core::{DType, Tensor, D};

use crate::error::Result;

/// RMS normalisation over the last dimension: x / sqrt(mean(x²) + ε) · w.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, grad: bool) -> Result<Tensor> {
    if !grad {
        return Ok(candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32)?);
    }
    let dim = x.dim(D::Minus1)? as f64;
    let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / dim)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(weight)?)
}

/// Softmax over the last dimension.
pub(crate) fn softmax_last(x: &Tensor, grad: bool) -> Result<Tensor> {
    if !grad {
        return Ok(candle_nn::ops::softmax_last_dim(x)?);
    }
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    Ok(e.broadcast_div(&sum)?)
}

/// Rotary embedding in the Hugging Face layout (halves rotated, not interleaved).
///
/// `x`: [batch, heads, seq, head_dim]; `cos`, `sin`: [seq, head_dim/2] or
/// [batch, seq, head_dim/2].
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, grad: bool) -> Result<Tensor> {
    if !grad {
        return Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?);
    }
    let (cos, sin) = match cos.rank() {
        2 => (cos.unsqueeze(0)?.unsqueeze(0)?, sin.unsqueeze(0)?.unsqueeze(0)?),
        _ => (cos.unsqueeze(1)?, sin.unsqueeze(1)?),
    };
    let cos = Tensor::cat(&[&cos, &cos], D::Minus1)?;
    let sin = Tensor::cat(&[&sin, &sin], D::Minus1)?;
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
}

/// SiLU(gate) · up, the gated MLP activation.
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok((candle_nn::ops::silu(gate)? * up)?)
}

/// Repeats key/value heads for grouped-query attention: [b, kv, t, d] → [b, kv·n, t, d].
pub(crate) fn repeat_kv(x: Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x);
    }
    let (b, kv, t, d) = x.dims4()?;
    Ok(Tensor::cat(&vec![&x; n], 2)?.reshape((b, kv * n, t, d))?)
}

/// Cos/sin tables [positions, head_dim/2] of the rotary embedding (optionally Llama 3 scaled).
pub(crate) fn rope_tables(
    cfg: &crate::config::ModelConfig,
    device: &candle_core::Device,
) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim / 2;
    let mut inv_freq: Vec<f64> = (0..half)
        .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64))
        .collect();
    if let Some(s) = &cfg.rope_scaling {
        let old = s.original_max_position_embeddings as f64;
        let low_wavelen = old / s.low_freq_factor;
        let high_wavelen = old / s.high_freq_factor;
        for f in inv_freq.iter_mut() {
            let wavelen = 2.0 * std::f64::consts::PI / *f;
            if wavelen > low_wavelen {
                *f /= s.factor;
            } else if wavelen >= high_wavelen {
                let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
            }
        }
    }
    let n = cfg.max_position_embeddings;
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for f in &inv_freq {
            // transformers computes the angle in f32.
            let angle = (p as f32) * (*f as f32);
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    let cos = Tensor::from_vec(cos, (n, half), device)?.to_dtype(DType::F32)?;
    let sin = Tensor::from_vec(sin, (n, half), device)?.to_dtype(DType::F32)?;
    Ok((cos, sin))
}
