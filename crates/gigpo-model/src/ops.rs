//! Building blocks of the forward pass.
//!
//! Each op has up to three paths. On the CPU in f32: our kernels in `fused.rs`, which record a
//! backward step when the input has a graph (candle's fused `rms_norm`, `softmax_last_dim` and
//! `rope` record none); softmax and SwiGLU take them without a graph too (their exponentials are
//! vectorised). Without `grad` otherwise: candle's fused kernels. With `grad` elsewhere:
//! composed tensor ops.

use candle_core::{DType, Tensor, D};

use crate::error::Result;

/// Whether the CPU f32 kernels with backward apply.
fn own_kernels(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// RMS normalisation over the last dimension: x / sqrt(mean(x²) + ε) · w.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, grad: bool) -> Result<Tensor> {
    if !grad {
        return Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            weight,
            eps as f32,
        )?);
    }
    if own_kernels(x) {
        return Ok(crate::fused::rms_norm(x, weight, eps)?);
    }
    rms_norm_composed(x, weight, eps)
}

fn rms_norm_composed(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dim = x.dim(D::Minus1)? as f64;
    let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / dim)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(weight)?)
}

/// Softmax over the last dimension.
pub(crate) fn softmax_last(x: &Tensor, grad: bool) -> Result<Tensor> {
    if own_kernels(x) {
        return Ok(crate::fused::softmax_last(x)?);
    }
    if !grad {
        return Ok(candle_nn::ops::softmax_last_dim(x)?);
    }
    softmax_composed(x)
}

fn softmax_composed(x: &Tensor) -> Result<Tensor> {
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
    if own_kernels(x) {
        return Ok(crate::fused::rope(x, cos, sin)?);
    }
    rope_composed(x, cos, sin)
}

fn rope_composed(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (cos, sin) = match cos.rank() {
        2 => (
            cos.unsqueeze(0)?.unsqueeze(0)?,
            sin.unsqueeze(0)?.unsqueeze(0)?,
        ),
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

/// SiLU(gate) · up, the gated MLP activation (one pass on the CPU in f32, with or without a
/// graph; composed ops elsewhere).
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if own_kernels(gate) {
        return Ok(crate::fused::swiglu(gate, up)?);
    }
    swiglu_composed(gate, up)
}

fn swiglu_composed(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok((candle_nn::ops::silu(gate)? * up)?)
}

/// Rows up to which [`matmul_t`] turns the product around (a decoding step has one per sequence).
const FEW_ROWS: usize = 16;

/// x·Wᵀ for `x` [n, in] and `w` [out, in]. With at most [`FEW_ROWS`] rows and no graph it is
/// computed as (W·xᵀ)ᵀ, which runs the matrix-product kernels along the long dimension.
pub(crate) fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let few_rows = x.dim(0)? <= FEW_ROWS && !x.track_op() && !w.track_op();
    if few_rows {
        return Ok(w.matmul(&x.t()?)?.t()?.contiguous()?);
    }
    Ok(x.matmul(&w.t()?)?)
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
                let smooth =
                    (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
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

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::*;

    /// A deterministic tensor of values in [−1, 1).
    pub(crate) fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The largest absolute difference between `a` and `b`.
    pub(crate) fn close(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Value and gradients of Σ f(x)·c for the kernel and the composed version.
    fn compare(f: impl Fn(&Tensor, bool) -> Tensor, x: &Tensor, params: &[&Var]) {
        let xv = Var::from_tensor(x).unwrap();
        let c = rand(x.dims(), 5);
        let (own, comp) = (f(xv.as_tensor(), true), f(xv.as_tensor(), false));
        assert!(close(&own, &comp) < 1e-5, "forward differs");
        let g_own = (own * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let g_comp = (comp * &c).unwrap().sum_all().unwrap().backward().unwrap();
        for v in std::iter::once(&xv).chain(params.iter().copied()) {
            let (a, b) = (
                g_own.get(v.as_tensor()).unwrap(),
                g_comp.get(v.as_tensor()).unwrap(),
            );
            assert!(close(a, b) < 1e-4, "gradient differs by {}", close(a, b));
        }
    }

    #[test]
    fn rms_norm_kernel_matches_composed() {
        let w = Var::from_tensor(&rand(&[16], 2)).unwrap();
        let f = |x: &Tensor, own: bool| {
            if own {
                crate::fused::rms_norm(x, w.as_tensor(), 1e-6).unwrap()
            } else {
                rms_norm_composed(x, w.as_tensor(), 1e-6).unwrap()
            }
        };
        compare(f, &rand(&[6, 16], 1), &[&w]);
    }

    #[test]
    fn softmax_kernel_matches_composed() {
        let f = |x: &Tensor, own: bool| {
            if own {
                crate::fused::softmax_last(x).unwrap()
            } else {
                softmax_composed(x).unwrap()
            }
        };
        compare(f, &(rand(&[2, 3, 5, 7], 3) * 4.0).unwrap(), &[]);
    }

    #[test]
    fn swiglu_kernel_matches_composed() {
        // One block of elements, and several with a partial last one.
        for shape in [[5, 9], [3, 3000]] {
            let up = Var::from_tensor(&rand(&shape, 6)).unwrap();
            let f = |x: &Tensor, own: bool| {
                if own {
                    crate::fused::swiglu(x, up.as_tensor()).unwrap()
                } else {
                    swiglu_composed(x, up.as_tensor()).unwrap()
                }
            };
            compare(f, &(rand(&shape, 2) * 6.0).unwrap(), &[&up]);
        }
    }

    #[test]
    fn rope_kernel_matches_composed() {
        for batched in [false, true] {
            let (cos, sin) = if batched {
                (rand(&[2, 5, 4], 7), rand(&[2, 5, 4], 8))
            } else {
                (rand(&[5, 4], 7), rand(&[5, 4], 8))
            };
            let f = |x: &Tensor, own: bool| {
                if own {
                    crate::fused::rope(x, &cos, &sin).unwrap()
                } else {
                    rope_composed(x, &cos, &sin).unwrap()
                }
            };
            compare(f, &rand(&[2, 3, 5, 8], 4), &[]);
        }
    }
}
