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
