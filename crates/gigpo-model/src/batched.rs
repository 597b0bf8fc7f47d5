//! Batched matrix products on the CPU, parallel over the batch.
//!
//! candle multiplies a batch one matrix after the other and leaves each product to the matrix
//! kernel's own threading, which does not split products below about 600k multiply-adds: the
//! per-head products of attention on small models then run on one core. Here each product
//! of a batch runs on one thread and the batch is spread over the thread pool; large products
//! keep the kernel's threading. No backward step: this is for tensors without a graph.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Products of at most this many multiply-adds run one per thread...
const SMALL_PRODUCT: usize = 1 << 19;
/// ...when the whole batch has at least this many (below it, waking threads costs more).
const PARALLEL_BATCH: usize = 1 << 22;

/// a·b over the leading (batch) dimensions: `a` [..., m, k], `b` [..., k, n] → [..., m, n]. The
/// last two dimensions of each may be transposed views. candle's `matmul` where this does not
/// apply: other devices and dtypes, fewer than three dimensions, batches not laid out one
/// after the other.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let applies = |t: &Tensor| {
        t.device().is_cpu()
            && t.dtype() == candle_core::DType::F32
            && t.rank() >= 3
            && batch_distance(t.layout()).is_some()
    };
    if applies(a) && applies(b) {
        return a.apply_op2_no_bwd(b, &BatchedMatmul);
    }
    a.matmul(b)
}

/// Elements between consecutive matrices of a [..., rows, cols] layout whose batch dimensions
/// follow each other at one distance; `None` otherwise.
fn batch_distance(l: &Layout) -> Option<usize> {
    let (dims, st) = (l.dims(), l.stride());
    let r = dims.len();
    let dist = st[r - 3];
    let mut want = dist;
    for i in (0..r - 2).rev() {
        if dims[i] > 1 && st[i] != want {
            return None;
        }
        want *= dims[i];
    }
    Some(dist)
}

struct BatchedMatmul;

/// A matrix operand: its elements, row and column strides, and the distance between batches.
struct Operand<'a> {
    data: &'a [f32],
    rs: isize,
    cs: isize,
    batch: usize,
}

impl<'a> Operand<'a> {
    fn new(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<(Self, usize, usize)> {
        let Some(batch) = batch_distance(l) else {
            candle_core::bail!("{what}: batches are not laid out one after the other");
        };
        let data = &s.as_slice::<f32>()?[l.start_offset()..];
        let st = l.stride();
        let r = st.len();
        let d = l.dims();
        let op = Operand {
            data,
            rs: st[r - 2] as isize,
            cs: st[r - 1] as isize,
            batch,
        };
        Ok((op, d[r - 2], d[r - 1]))
    }
}

impl CustomOp2 for BatchedMatmul {
    fn name(&self) -> &'static str {
        "batched-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, m, k) = Operand::new(s1, l1, "batched matmul lhs")?;
        let (b, k2, n) = Operand::new(s2, l2, "batched matmul rhs")?;
        let (da, db) = (l1.dims(), l2.dims());
        let lead = &da[..da.len() - 2];
        if k != k2 || lead != &db[..db.len() - 2] {
            candle_core::bail!("batched matmul: shapes {da:?} and {db:?} do not match");
        }
        let count: usize = lead.iter().product();
        let mut out = vec![0f32; count * m * n];
        let product = |i: usize, dst: &mut [f32], par: Parallelism| {
            // SAFETY: each operand's storage holds `count` matrices at its batch distance with
            // the strides of its layout (candle checked the layout against the storage when
            // the tensor was made; `batch_distance` checked the batch dimensions), and `dst`
            // is one contiguous m × n block.
            unsafe {
                gemm(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.data.as_ptr().add(i * a.batch),
                    a.cs,
                    a.rs,
                    b.data.as_ptr().add(i * b.batch),
                    b.cs,
                    b.rs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            }
        };
        let macs = m * n * k;
        if macs <= SMALL_PRODUCT && count * macs >= PARALLEL_BATCH {
            out.par_chunks_mut(m * n)
                .enumerate()
                .for_each(|(i, dst)| product(i, dst, Parallelism::None));
        } else {
            let par = Parallelism::Rayon(rayon::current_num_threads());
            out.chunks_mut(m * n)
                .enumerate()
                .for_each(|(i, dst)| product(i, dst, par));
        }
        let mut shape = lead.to_vec();
        shape.extend([m, n]);
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::tests::{close as max_diff, rand};

    #[test]
    fn matches_candle_on_small_large_and_transposed_operands() {
        // Small products (parallel over the batch) and a large one (threaded product).
        for (lead, m, k, n) in [(vec![2, 3], 5, 7, 4), (vec![1, 2], 200, 64, 120)] {
            let mut sa = lead.clone();
            sa.extend([m, k]);
            let mut sb = lead.clone();
            sb.extend([k, n]);
            let (a, b) = (rand(&sa, 1), rand(&sb, 2));
            let want = a.matmul(&b).unwrap();
            assert!(max_diff(&super::matmul(&a, &b).unwrap(), &want) < 1e-4);
            // b given as the transpose of a contiguous [.., n, k] tensor.
            let bt = b.transpose(2, 3).unwrap().contiguous().unwrap();
            let got = super::matmul(&a, &bt.t().unwrap()).unwrap();
            assert!(max_diff(&got, &want) < 1e-4);
        }
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let (a, b) = (rand(&[2, 3, 4], 1), rand(&[2, 5, 4], 2));
        assert!(super::matmul(&a, &b).is_err());
    }
}
