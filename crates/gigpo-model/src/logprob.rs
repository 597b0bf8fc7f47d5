//! Log-softmax, gather and entropy fused in one pass over the logits, with a backward step.

use crate::fused::contiguous;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Log-probability of `targets` under softmax(`logits`) and the entropy of that softmax.
///
/// `logits`: [n, vocab] f32; `targets`: [n] u32. Returns `(logprobs [n], entropies [n])`.
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
        return Err(crate::error::ModelError::arg(
            "logits",
            format!("dtype {:?}, expected f32", t.dtype()),
        ));
    }
    Ok(())
}
