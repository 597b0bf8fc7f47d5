//! Helpers of the CPU kernels: the elements of an input, and a loop over output rows.

use candle_core::{CpuStorage, Layout};
use rayon::prelude::*;

/// The contiguous elements of a CPU tensor of dtype `T`; an error naming `what` otherwise.
pub(crate) fn contiguous<'a, T: candle_core::WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    let Ok(data) = s.as_slice::<T>() else {
        candle_core::bail!("{what}: only {:?} is supported", T::DTYPE);
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

/// Rows below this many elements are processed without spawning parallel work.
const PAR_MIN: usize = 1 << 14;

/// Runs `f(i, row_i)` over the rows of width `d` of `out`, in parallel when it is large.
pub(crate) fn for_rows(out: &mut [f32], d: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(d).enumerate().for_each(|(i, o)| f(i, o));
    } else {
        out.chunks_mut(d).enumerate().for_each(|(i, o)| f(i, o));
    }
}

/// Matrix products of fewer multiply-adds than this run on one thread: 4 × the matrix kernel's
/// default (48·48·256). Waking the other threads costs more than it saves below it: on 2 cores
/// sampling a batch of 16 from the tiny model took 0.052–0.059 s with the default and
/// 0.037–0.039 s with this, training steps and SmolLM2-135M unchanged (`bench/model/run.sh`).
const MATMUL_THREADING_MIN: usize = 4 * 48 * 48 * 256;

/// Sets the matrix kernel's threading threshold for the process, once (a policy is created).
pub(crate) fn tune_matmul_threading() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| gemm::set_threading_threshold(MATMUL_THREADING_MIN));
}
