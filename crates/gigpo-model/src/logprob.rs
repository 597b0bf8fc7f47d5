//! Log-softmax, gather and entropy fused in one pass over the logits, with a backward step.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::attach::attach2;
use crate::cpu::contiguous;
use crate::error::{ModelError, Result};
use crate::processing::{LogitProcessing, RowDist, EXCLUDED_LOGPROB};

/// Log-probability of `targets` under softmax(`logits`) and the entropy of that softmax.
///
/// `logits`: [n, vocab] f32; `targets`: `[n]` u32. Returns `(logprobs [n], entropies [n])`.
/// On CPU one pass per row computes both (no [n, vocab] intermediate); the backward step
/// writes the [n, vocab] gradient directly. On other devices composed ops are used.
pub fn logprob_entropy(logits: &Tensor, targets: &Tensor) -> Result<(Tensor, Tensor)> {
    let out = if logits.device().is_cpu() {
        logits
            .contiguous()?
            .apply_op2(&targets.contiguous()?, LogprobEntropy)?
    } else {
        composed(logits, targets)?
    };
    Ok((
        out.narrow(1, 0, 1)?.squeeze(1)?,
        out.narrow(1, 1, 1)?.squeeze(1)?,
    ))
}

fn composed(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let lsm = candle_nn::ops::log_softmax(logits, 1)?;
    let lp = lsm.gather(&targets.unsqueeze(1)?, 1)?;
    let ent = (lsm.exp()? * &lsm)?.sum_keepdim(1)?.neg()?;
    Tensor::cat(&[&lp, &ent], 1)
}

/// Row statistics: (max, log Σ exp(z − max)).
fn row_lse(row: &[f32]) -> (f32, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|z| (z - max).exp()).sum();
    (max, max + sum.ln())
}

struct LogprobEntropy;

impl CustomOp2 for LogprobEntropy {
    fn name(&self) -> &'static str {
        "logprob-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, v) = l1.shape().dims2()?;
        let logits = contiguous::<f32>(s1, l1, "logprob_entropy")?;
        let targets = contiguous::<u32>(s2, l2, "logprob_entropy targets")?;
        if targets.len() != n {
            candle_core::bail!("logprob_entropy: {n} rows but {} targets", targets.len());
        }
        if let Some(&t) = targets.iter().find(|&&t| t as usize >= v) {
            candle_core::bail!("logprob_entropy: target id {t} outside the vocabulary of {v}");
        }
        let mut out = vec![0f32; n * 2];
        out.par_chunks_mut(2).enumerate().for_each(|(i, o)| {
            let row = &logits[i * v..(i + 1) * v];
            let (max, lse) = row_lse(row);
            let (mut s, mut sz) = (0f32, 0f32);
            for &z in row {
                let e = (z - max).exp();
                s += e;
                sz += e * z;
            }
            o[0] = row[targets[i] as usize] - lse;
            o[1] = lse - sz / s;
        });
        Ok((CpuStorage::F32(out), Shape::from((n, 2))))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let aux = Tensor::cat(&[grad_res, res], 1)?.contiguous()?;
        let g = logits.apply_op3_no_bwd(targets, &aux, &LogprobEntropyGrad)?;
        Ok((Some(g), None))
    }
}

/// d/dz of (g_l·log p_t + g_h·H): g_l·(1[j=t] − p_j) − g_h·p_j·(log p_j + H).
struct LogprobEntropyGrad;

impl CustomOp3 for LogprobEntropyGrad {
    fn name(&self) -> &'static str {
        "logprob-entropy-grad"
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
        let (n, v) = l1.shape().dims2()?;
        let logits = contiguous::<f32>(s1, l1, "logprob_entropy grad")?;
        let targets = contiguous::<u32>(s2, l2, "logprob_entropy targets")?;
        let aux = contiguous::<f32>(s3, l3, "logprob_entropy grad")?;
        let mut out = vec![0f32; n * v];
        out.par_chunks_mut(v).enumerate().for_each(|(i, o)| {
            let row = &logits[i * v..(i + 1) * v];
            let (gl, gh, h) = (aux[i * 4], aux[i * 4 + 1], aux[i * 4 + 3]);
            let (_, lse) = row_lse(row);
            for (oj, &z) in o.iter_mut().zip(row) {
                let lp = z - lse;
                let p = lp.exp();
                *oj = -gl * p - gh * p * (lp + h);
            }
            o[targets[i] as usize] += gl;
        });
        Ok((CpuStorage::F32(out), Shape::from((n, v))))
    }
}

/// Checks the dtype the fused op needs.
pub(crate) fn check_f32(t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(ModelError::arg(
            "logits",
            format!("dtype {:?}, expected f32", t.dtype()),
        ));
    }
    Ok(())
}

/// Elements of one chunk of logits in [`head_logprob_entropy`] (16 MiB of f32).
const HEAD_CHUNK_ELEMS: usize = 1 << 22;

/// Log-probabilities of `targets` and entropies under the processed distribution `p` of the
/// logits `rows · wᵀ`, without materialising all of them: `rows` [n, d] f32, `w` [vocab, d],
/// `targets` n ids. Returns `(logprobs [n], entropies [n])`, differentiable in `rows` and, when
/// it is trainable, `w`.
///
/// On the CPU, rows go through the output projection in chunks of at most
/// [`HEAD_CHUNK_ELEMS`] logits, forward and again in the backward step, so the [n, vocab]
/// logits and their gradient never exist whole. The kept set of top-k / top-p is chosen from
/// the logits (a choice without gradient). Elsewhere composed ops over the whole logits are used.
pub(crate) fn head_logprob_entropy(
    rows: &Tensor,
    w: &Tensor,
    targets: &[u32],
    p: &LogitProcessing,
) -> Result<(Tensor, Tensor)> {
    let (n, _) = rows.dims2()?;
    let v = w.dim(0)?;
    if targets.len() != n {
        return Err(ModelError::arg(
            "targets",
            format!("{} targets for {n} rows", targets.len()),
        ));
    }
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= v) {
        return Err(ModelError::arg(
            "targets",
            format!("id {t} outside the vocabulary of {v}"),
        ));
    }
    check_f32(rows)?;
    let out = if rows.device().is_cpu() {
        let targets = targets.to_vec();
        let p = *p;
        let value = head_forward(&rows.detach(), &w.detach(), &targets, &p)?;
        attach2(
            "head-logprob-entropy",
            value,
            (rows, w),
            move |[r, w], need, g| head_backward(r, w, &targets, &p, g, need[1]),
        )?
    } else {
        head_composed(rows, w, targets, p)?
    };
    Ok((
        out.narrow(1, 0, 1)?.squeeze(1)?,
        out.narrow(1, 1, 1)?.squeeze(1)?,
    ))
}

/// Row ranges of at most [`HEAD_CHUNK_ELEMS`] / vocab rows.
fn row_chunks(n: usize, v: usize) -> impl Iterator<Item = (usize, usize)> {
    let c = (HEAD_CHUNK_ELEMS / v.max(1)).max(1);
    (0..n).step_by(c).map(move |s| (s, c.min(n - s)))
}

fn chunk_logits(
    rows: &Tensor,
    w: &Tensor,
    (s, c): (usize, usize),
) -> candle_core::Result<Vec<f32>> {
    let l = rows.narrow(0, s, c)?.matmul(&w.t()?)?;
    l.flatten_all()?.to_vec1::<f32>()
}

/// [n, 2]: log π(target) and entropy of each row.
fn head_forward(
    rows: &Tensor,
    w: &Tensor,
    targets: &[u32],
    p: &LogitProcessing,
) -> candle_core::Result<Tensor> {
    let (n, v) = (rows.dim(0)?, w.dim(0)?);
    let mut out = vec![0f32; 2 * n];
    for (s, c) in row_chunks(n, v) {
        let logits = chunk_logits(rows, w, (s, c))?;
        out[2 * s..2 * (s + c)]
            .par_chunks_mut(2)
            .enumerate()
            .for_each(|(i, o)| {
                let row = &logits[i * v..(i + 1) * v];
                let dist = RowDist::new(row, p);
                o[0] = dist.logprob(row, targets[s + i] as usize);
                o[1] = dist.entropy;
            });
    }
    Tensor::from_vec(out, (n, 2), rows.device())
}

/// Gradients of rows (and of `w` when `need_w`) given the gradient [n, 2] of the output.
fn head_backward(
    rows: &Tensor,
    w: &Tensor,
    targets: &[u32],
    p: &LogitProcessing,
    g: &Tensor,
    need_w: bool,
) -> candle_core::Result<[Option<Tensor>; 2]> {
    let (n, v) = (rows.dim(0)?, w.dim(0)?);
    let g = g.flatten_all()?.to_vec1::<f32>()?;
    let mut d_rows = Vec::new();
    let mut d_w: Option<Tensor> = None;
    for (s, c) in row_chunks(n, v) {
        let logits = chunk_logits(rows, w, (s, c))?;
        let mut dl = vec![0f32; c * v];
        dl.par_chunks_mut(v).enumerate().for_each(|(i, o)| {
            let row = &logits[i * v..(i + 1) * v];
            let k = s + i;
            RowDist::new(row, p).grad(row, targets[k] as usize, (g[2 * k], g[2 * k + 1]), o);
        });
        let dl = Tensor::from_vec(dl, (c, v), rows.device())?;
        d_rows.push(dl.matmul(w)?);
        if need_w {
            let dw = dl.t()?.matmul(&rows.narrow(0, s, c)?)?;
            d_w = Some(match d_w {
                None => dw,
                Some(acc) => (acc + dw)?,
            });
        }
    }
    Ok([Some(Tensor::cat(&d_rows, 0)?), d_w])
}

/// The composed version for other devices: [n, 2].
fn head_composed(
    rows: &Tensor,
    w: &Tensor,
    targets: &[u32],
    p: &LogitProcessing,
) -> Result<Tensor> {
    let logits = rows.matmul(&w.t()?)?;
    let t = Tensor::from_vec(targets.to_vec(), targets.len(), rows.device())?;
    if p.is_raw() {
        return Ok(composed(&logits, &t)?);
    }
    let host = logits.detach().to_vec2::<f32>()?;
    let v = w.dim(0)?;
    let mut mask = vec![0f32; host.len() * v];
    for (i, row) in host.iter().enumerate() {
        if let Some(kept) = crate::processing::kept_set(row, p) {
            let m = &mut mask[i * v..(i + 1) * v];
            m.iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
            kept.iter().for_each(|&j| m[j as usize] = 0.0);
        }
    }
    let mask = Tensor::from_vec(mask, (host.len(), v), rows.device())?;
    let z = ((logits / p.temperature)? + mask)?;
    let lsm = candle_nn::ops::log_softmax(&z, 1)?;
    let lp = lsm.gather(&t.unsqueeze(1)?, 1)?;
    let lp = lp.maximum(EXCLUDED_LOGPROB as f64)?;
    let probs = lsm.exp()?;
    let plogp = (probs * lsm.maximum(-1e30)?)?;
    let ent = plogp.sum_keepdim(1)?.neg()?;
    Ok(Tensor::cat(&[&lp, &ent], 1)?)
}
