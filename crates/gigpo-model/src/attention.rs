//! Scaled dot-product attention with grouped-query heads, computed in blocks of queries.
//!
//! On the CPU in f32 the [batch, heads, queries, keys] scores exist one block of queries at a
//! time (forward and backward; the backward step recomputes the block's probabilities), so no
//! [t, t] matrix is kept for the backward pass. Elsewhere the composed ops are used.

use candle_core::{DType, Device, Tensor, D};

use crate::attach::attach3;
use crate::batched::matmul as bmm;
use crate::error::Result;

/// Which keys each query sees.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AttnMask<'a> {
    /// Every key (one query over a cache with nothing to hide).
    None,
    /// Query i (absolute position keys − queries + i) sees keys up to its own position.
    Causal,
    /// Left-padded rows: query i (absolute `past + i`) sees key j when j ≤ past + i and j is
    /// not padding (j ≥ pads[row]); a padding query sees itself only.
    Padded {
        /// Padding length of each row.
        pads: &'a [usize],
        /// Keys before the first query.
        past: usize,
    },
}

/// Scores per block: at most this many f32 (16 MiB).
const BLOCK_ELEMS: usize = 1 << 22;

/// softmax(q·kᵀ·scale + mask)·v. `q`: [b, heads, t, hd]; `k`, `v`: [b, kv_heads, s, hd] with
/// query head h using key/value head h / (heads / kv_heads). Returns [b, heads, t, hd].
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: AttnMask<'_>,
    scale: f64,
) -> Result<Tensor> {
    if !(q.device().is_cpu() && q.dtype() == DType::F32) {
        return composed(q, k, v, mask, scale);
    }
    let owned = OwnedMask::from(mask);
    let (qd, kd, vd) = (q.detach(), k.detach(), v.detach());
    let value = blocked_forward(&qd, &kd, &vd, &owned, scale)?;
    Ok(attach3(
        "attention",
        value,
        (q, k, v),
        move |[q, k, v], _, g| blocked_backward(q, k, v, &owned, scale, g),
    )?)
}

/// The mask as the backward step keeps it.
#[derive(Debug, Clone)]
enum OwnedMask {
    None,
    Causal,
    Padded { pads: Vec<usize>, past: usize },
}

impl From<AttnMask<'_>> for OwnedMask {
    fn from(m: AttnMask<'_>) -> Self {
        match m {
            AttnMask::None => OwnedMask::None,
            AttnMask::Causal => OwnedMask::Causal,
            AttnMask::Padded { pads, past } => OwnedMask::Padded {
                pads: pads.to_vec(),
                past,
            },
        }
    }
}

impl OwnedMask {
    /// Keys that queries `c0..c0+c` can see at all (a prefix of the `s` keys).
    fn keys(&self, c0: usize, c: usize, t: usize, s: usize) -> usize {
        match self {
            OwnedMask::None => s,
            OwnedMask::Causal => s - t + c0 + c,
            OwnedMask::Padded { past, .. } => (past + c0 + c).min(s),
        }
    }

    /// Additive mask [rows, 1, 1, c, keys] (rows 1 or b) of queries `c0..c0+c`, or `None`.
    fn block(
        &self,
        c0: usize,
        c: usize,
        keys: usize,
        dev: &Device,
    ) -> candle_core::Result<Option<Tensor>> {
        let (past, pads): (usize, &[usize]) = match self {
            OwnedMask::None => return Ok(None),
            OwnedMask::Causal => (keys - c0 - c, &[0]),
            OwnedMask::Padded { pads, past } => (*past, pads),
        };
        let m = additive_mask(pads, past + c0, c, keys, dev)?;
        Some(m.reshape((pads.len(), 1, 1, c, keys))).transpose()
    }
}

/// Additive mask [rows, queries, keys] (one row per entry of `pads`): query i, at absolute
/// position `first + i`, sees key j when j ≤ first + i and j is not padding (j ≥ the row's
/// pad); a padding query sees itself only. 0 where it sees, −∞ elsewhere.
fn additive_mask(
    pads: &[usize],
    first: usize,
    queries: usize,
    keys: usize,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let mut data = Vec::with_capacity(pads.len() * queries * keys);
    for &pad in pads {
        for i in 0..queries {
            let qi = first + i;
            for j in 0..keys {
                let ok = j <= qi && (j >= pad || j == qi);
                data.push(if ok { 0.0 } else { f32::NEG_INFINITY });
            }
        }
    }
    Tensor::from_vec(data, (pads.len(), queries, keys), dev)
}

/// Queries per block for `b·heads` score rows over `s` keys.
fn block_len(bh: usize, t: usize, s: usize) -> usize {
    (BLOCK_ELEMS / (bh * s).max(1)).clamp(1, t.max(1))
}

/// One block's inputs and probabilities [b, kv, rep·c, keys].
struct Block {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    p: Tensor,
}

#[allow(clippy::too_many_arguments)]
fn block(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &OwnedMask,
    scale: f64,
    c0: usize,
    c: usize,
) -> candle_core::Result<Block> {
    let (b, h, t, hd) = q.dims4()?;
    let (_, kvh, s, _) = k.dims4()?;
    let rep = h / kvh;
    let keys = mask.keys(c0, c, t, s);
    let qb = q
        .narrow(2, c0, c)?
        .contiguous()?
        .reshape((b, kvh, rep * c, hd))?;
    let kb = k.narrow(2, 0, keys)?.contiguous()?;
    let vb = v.narrow(2, 0, keys)?.contiguous()?;
    let mut sc = (bmm(&qb, &kb.t()?)? * scale)?;
    if let Some(m) = mask.block(c0, c, keys, q.device())? {
        sc = sc.reshape((b, kvh, rep, c, keys))?.broadcast_add(&m)?;
    }
    let p = crate::fused::softmax_last(&sc)?.reshape((b, kvh, rep * c, keys))?;
    Ok(Block {
        q: qb,
        k: kb,
        v: vb,
        p,
    })
}

fn blocked_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &OwnedMask,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let (b, h, t, hd) = q.dims4()?;
    let s = k.dim(2)?;
    let c = block_len(b * h, t, s);
    let mut outs = Vec::new();
    for c0 in (0..t).step_by(c) {
        let n = c.min(t - c0);
        let blk = block(q, k, v, mask, scale, c0, n)?;
        outs.push(bmm(&blk.p, &blk.v)?.reshape((b, h, n, hd))?);
    }
    Tensor::cat(&outs, 2)
}

fn blocked_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &OwnedMask,
    scale: f64,
    g: &Tensor,
) -> candle_core::Result<[Option<Tensor>; 3]> {
    let (b, h, t, hd) = q.dims4()?;
    let (_, kvh, s, _) = k.dims4()?;
    let rep = h / kvh;
    let c = block_len(b * h, t, s);
    let mut dq = Vec::new();
    let mut dk = k.zeros_like()?;
    let mut dv = v.zeros_like()?;
    for c0 in (0..t).step_by(c) {
        let n = c.min(t - c0);
        let blk = block(q, k, v, mask, scale, c0, n)?;
        let keys = blk.k.dim(2)?;
        let go = g
            .narrow(2, c0, n)?
            .contiguous()?
            .reshape((b, kvh, rep * n, hd))?;
        let dv_b = bmm(&blk.p.t()?, &go)?;
        let dp = bmm(&go, &blk.v.t()?)?;
        let dot = (&blk.p * &dp)?.sum_keepdim(D::Minus1)?;
        let ds = ((dp.broadcast_sub(&dot)? * &blk.p)? * scale)?;
        dq.push(bmm(&ds, &blk.k)?.reshape((b, h, n, hd))?);
        let dk_b = bmm(&ds.t()?, &blk.q)?;
        dk = (dk + dk_b.pad_with_zeros(2, 0, s - keys)?)?;
        dv = (dv + dv_b.pad_with_zeros(2, 0, s - keys)?)?;
    }
    Ok([Some(Tensor::cat(&dq, 2)?), Some(dk), Some(dv)])
}

/// Whole-matrix attention with composed ops (devices other than the CPU).
fn composed(q: &Tensor, k: &Tensor, v: &Tensor, mask: AttnMask<'_>, scale: f64) -> Result<Tensor> {
    let (_, h, t, _) = q.dims4()?;
    let (_, kvh, s, _) = k.dims4()?;
    let k = crate::ops::repeat_kv(k.clone(), h / kvh)?;
    let v = crate::ops::repeat_kv(v.clone(), h / kvh)?;
    let mut att = (q.matmul(&k.t()?)? * scale)?;
    let dev = q.device();
    let m = match mask {
        AttnMask::None => None,
        AttnMask::Causal => Some(additive_mask(&[0], s - t, t, s, dev)?),
        AttnMask::Padded { pads, past } => Some(additive_mask(pads, past, t, past + t, dev)?),
    };
    if let Some(m) = m {
        let m = m.unsqueeze(1)?.to_dtype(att.dtype())?; // [rows, 1, t, keys]
        att = att.broadcast_add(&m)?;
    }
    let att = crate::ops::softmax_last(&att, att.track_op())?;
    Ok(att.matmul(&v.contiguous()?)?)
}
