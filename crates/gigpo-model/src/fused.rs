//! CPU kernels with a backward step for the training path: RMS norm, softmax, rotary embedding,
//! the SwiGLU activation.
//!
//! candle's own fused kernels record no backward step, and the composed versions allocate a
//! tensor per elementary op. These do one pass forward and one (or a few) backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use rayon::prelude::*;

use crate::cpu::{contiguous, for_rows};
use crate::exp::exp_in_place;

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
            let max = crate::exp::max(row);
            for (o, &z) in o.iter_mut().zip(row) {
                *o = z - max;
            }
            exp_in_place(o);
            let inv = 1.0 / crate::exp::sum(o);
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

/// SiLU(gate) · up element-wise, with backward. `gate` and `up` have the same shape.
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

struct SwiGlu;

/// out = e^(−x) element-wise (σ(x) = 1 / (1 + e^(−x))).
fn neg_exp(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = -v;
    }
    exp_in_place(out);
}

/// Rows of this many elements split the element-wise kernels into parallel work.
const ELEMWISE_ROW: usize = 1 << 12;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let gate = contiguous::<f32>(s1, l1, "swiglu")?;
        let up = contiguous::<f32>(s2, l2, "swiglu")?;
        if l1.shape() != l2.shape() {
            candle_core::bail!("swiglu: gate {:?} and up {:?}", l1.shape(), l2.shape());
        }
        let mut out = vec![0f32; gate.len()];
        for_rows(&mut out, ELEMWISE_ROW, |i, o| {
            let at = i * ELEMWISE_ROW;
            let (gate, up) = (&gate[at..at + o.len()], &up[at..at + o.len()]);
            neg_exp(gate, o);
            for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
                *o = g / (1.0 + *o) * u;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let both = gate.apply_op3_no_bwd(up, &g.contiguous()?, &SwiGluGrad)?;
        let n = gate.elem_count();
        let d_gate = both.narrow(0, 0, n)?.reshape(gate.shape())?;
        let d_up = both.narrow(0, n, n)?.reshape(up.shape())?;
        Ok((Some(d_gate), Some(d_up)))
    }
}

/// Returns [2n]: ∂/∂gate = g·up·σ(x)·(1 + x·(1 − σ(x))) with x = gate, then ∂/∂up = g·SiLU(x).
struct SwiGluGrad;

impl CustomOp3 for SwiGluGrad {
    fn name(&self) -> &'static str {
        "swiglu-grad"
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
        let gate = contiguous::<f32>(s1, l1, "swiglu grad")?;
        let up = contiguous::<f32>(s2, l2, "swiglu grad")?;
        let g = contiguous::<f32>(s3, l3, "swiglu grad")?;
        let n = gate.len();
        let mut out = vec![0f32; 2 * n];
        let (d_gate, d_up) = out.split_at_mut(n);
        let grads = |i: usize, dg: &mut [f32], du: &mut [f32]| {
            let at = i * ELEMWISE_ROW;
            neg_exp(&gate[at..at + dg.len()], dg);
            for j in 0..dg.len() {
                let (x, u, gj) = (gate[at + j], up[at + j], g[at + j]);
                let s = 1.0 / (1.0 + dg[j]);
                dg[j] = gj * u * s * (1.0 + x * (1.0 - s));
                du[j] = gj * x * s;
            }
        };
        d_gate
            .par_chunks_mut(ELEMWISE_ROW)
            .zip(d_up.par_chunks_mut(ELEMWISE_ROW))
            .enumerate()
            .for_each(|(i, (dg, du))| grads(i, dg, du));
        Ok((CpuStorage::F32(out), Shape::from(2 * n)))
    }
}
