//! CPU kernels with a backward step for the training path: RMS norm, softmax, rotary embedding.
//!
//! candle's own fused kernels record no backward step, and the composed versions allocate a
//! tensor per elementary op. These do one pass forward and one (or a few) backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use crate::cpu::{contiguous, for_rows};

/// x / sqrt(mean(x²) + ε) · w over the last dimension, with backward.
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2(&w.contiguous()?, RmsNorm { eps: eps as f32 })
}

struct RmsNorm {
    eps: f32,
}

fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous::<f32>(s1, l1, "rms_norm")?;
        let w = contiguous::<f32>(s2, l2, "rms_norm")?;
        let d = w.len();
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, d, |i, o| {
            let row = &x[i * d..(i + 1) * d];
            let r = inv_rms(row, self.eps);
            for j in 0..d {
                o[j] = row[j] * r * w[j];
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let d = w.dim(0)?;
        let n = x.elem_count() / d;
        let both = x.apply_op3_no_bwd(w, &g.contiguous()?, &RmsNormGrad { eps: self.eps })?;
        let gx = both.narrow(0, 0, n)?.reshape(x.shape())?;
        let gw = both.narrow(0, n, 1)?.reshape(d)?;
        Ok((Some(gx), Some(gw)))
    }
}

/// Returns [n + 1, d]: rows 0..n are ∂/∂x, row n is ∂/∂w.
struct RmsNormGrad {
    eps: f32,
}

impl CustomOp3 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "rms-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous::<f32>(s1, l1, "rms_norm grad")?;
        let w = contiguous::<f32>(s2, l2, "rms_norm grad")?;
        let g = contiguous::<f32>(s3, l3, "rms_norm grad")?;
        let d = w.len();
        let n = x.len() / d;
        let mut out = vec![0f32; (n + 1) * d];
        let (gx, gw) = out.split_at_mut(n * d);
        for_rows(gx, d, |i, o| {
            let row = &x[i * d..(i + 1) * d];
            let gr = &g[i * d..(i + 1) * d];
            let r = inv_rms(row, self.eps);
            let mut dot = 0f32;
            for j in 0..d {
                dot += gr[j] * w[j] * row[j] * r;
            }
            let mean = dot / d as f32;
            for j in 0..d {
                o[j] = r * (gr[j] * w[j] - row[j] * r * mean);
            }
        });
        for i in 0..n {
            let row = &x[i * d..(i + 1) * d];
            let gr = &g[i * d..(i + 1) * d];
            let r = inv_rms(row, self.eps);
            for j in 0..d {
                gw[j] += gr[j] * row[j] * r;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n + 1, d))))
    }
}

/// Softmax over the last dimension, with backward.
pub(crate) fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax)
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous::<f32>(s, l, "softmax")?;
        let d = l.shape().dims().last().copied().unwrap_or(1);
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, d, |i, o| {
            let row = &x[i * d..(i + 1) * d];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for j in 0..d {
                let e = (row[j] - max).exp();
                o[j] = e;
                sum += e;
            }
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|v| *v *= inv);
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxGrad)?))
    }
}

/// y ⊙ (g − Σ g·y).
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = contiguous::<f32>(s1, l1, "softmax grad")?;
        let g = contiguous::<f32>(s2, l2, "softmax grad")?;
        let d = l1.shape().dims().last().copied().unwrap_or(1);
        let mut out = vec![0f32; y.len()];
        for_rows(&mut out, d, |i, o| {
            let (yr, gr) = (&y[i * d..(i + 1) * d], &g[i * d..(i + 1) * d]);
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for j in 0..d {
                o[j] = yr[j] * (gr[j] - dot);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Rotary embedding (halves layout) with backward. `x`: [b, h, t, d]; `cos`, `sin`: [t, d/2]
/// or [b, t, d/2].
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(
        &cos.contiguous()?,
        &sin.contiguous()?,
        Rope { inverse: false },
    )
}

struct Rope {
    inverse: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "rope-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous::<f32>(s1, l1, "rope")?;
        let cos = contiguous::<f32>(s2, l2, "rope")?;
        let sin = contiguous::<f32>(s3, l3, "rope")?;
        let (b, h, t, d) = l1.shape().dims4()?;
        let half = d / 2;
        let per_batch = l2.shape().rank() == 3;
        if cos.len() < t * half * if per_batch { b } else { 1 } {
            candle_core::bail!("rope: cos/sin tables too short for {t} positions");
        }
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, t * d, |row, o| {
            let bi = row / h;
            let base = if per_batch { bi * t * half } else { 0 };
            let xr = &x[row * t * d..(row + 1) * t * d];
            for p in 0..t {
                let (c, s) = (
                    &cos[base + p * half..base + (p + 1) * half],
                    &sin[base + p * half..base + (p + 1) * half],
                );
                let xp = &xr[p * d..(p + 1) * d];
                let op = &mut o[p * d..(p + 1) * d];
                for i in 0..half {
                    let (x1, x2, si) = (xp[i], xp[i + half], sign * s[i]);
                    op[i] = x1 * c[i] - x2 * si;
                    op[i + half] = x2 * c[i] + x1 * si;
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let gx = g.contiguous()?.apply_op3_no_bwd(
            cos,
            sin,
            &Rope {
                inverse: !self.inverse,
            },
        )?;
        Ok((Some(gx), None, None))
    }
}
