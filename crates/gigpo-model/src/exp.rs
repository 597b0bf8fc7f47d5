//! e^x over a slice, vectorised: the softmax, log-softmax and SiLU kernels spend most of their
//! non-matrix time in `exp`, which the C library computes one value at a time.
//!
//! The method is the usual one (as in Cephes' `expf`): x = n·ln 2 + r with n the nearest
//! integer to x / ln 2 and |r| ≤ ln 2 / 2, e^r by a degree-7 polynomial, and 2ⁿ written into the
//! exponent bits. Relative error below 2e-7 (about 2 ulp) over the whole range; e^x is 0 below
//! −87.3 (where f32 goes subnormal), +∞ above 88.7, NaN stays NaN. The loop is compiled for
//! AVX-512 and AVX2 and the widest the CPU has is chosen at run time.

/// Below this e^x is taken as 0 (e^−87.34 is the smallest normal f32).
const LOW: f32 = -87.336_55;
/// From here e^x overflows to +∞.
const HIGH: f32 = 88.722_84;
/// ln 2 split in a part exact in few bits and the rest, so n·LN2_HI is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding and subtracting it rounds an f32 of magnitude < 2²² to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// e^x of one value; written without branches or calls so that loops over it vectorise.
#[inline(always)]
fn exp1(x: f32) -> f32 {
    let xc = x.clamp(LOW, HIGH);
    // t's low mantissa bits hold n: reading them avoids a float-to-int conversion.
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let n_int = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    // Taylor coefficients 1/k! of e^r on |r| ≤ 0.35 (the tail beyond r⁷/7! is below 2e-8).
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // 2ⁿ for n in [−126, 128] as 2ⁿ¹·2ⁿ², both factors normal.
    let (n1, n2) = (n_int >> 1, n_int - (n_int >> 1));
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let y = p * pow2(n1) * pow2(n2);
    if x < LOW {
        0.0
    } else if x >= HIGH {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

#[inline(always)]
fn exp_generic(xs: &mut [f32]) {
    for v in xs.iter_mut() {
        *v = exp1(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp_avx512(xs: &mut [f32]) {
    exp_generic(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_avx2(xs: &mut [f32]) {
    exp_generic(xs)
}

/// Replaces every element of `xs` by its exponential.
pub(crate) fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { exp_avx512(xs) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { exp_avx2(xs) };
        }
    }
    exp_generic(xs)
}

/// Σ of `xs` with 16 independent partial sums (a loop the compiler can vectorise).
pub(crate) fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// Σ aᵢ·bᵢ with 16 independent partial sums.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// The largest element (−∞ for an empty slice; NaN elements are skipped).
pub(crate) fn max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(v);
        }
    }
    lanes.iter().copied().fold(rest, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_library_exp_to_two_ulp() {
        let mut xs: Vec<f32> = (0..200_001)
            .map(|i| -87.0 + 175.0 * i as f32 / 200_000.0)
            .collect();
        xs.extend([0.0, -0.0, 1e-8, -1e-8, 88.7, -87.3]);
        let mut got = xs.clone();
        exp_in_place(&mut got);
        for (&x, &y) in xs.iter().zip(&got) {
            let want = (x as f64).exp();
            let rel = ((y as f64 - want) / want).abs();
            assert!(
                rel < 2.5e-7,
                "exp({x}) = {y}, want {want} (relative error {rel:e})"
            );
        }
    }

    #[test]
    fn edges() {
        let mut xs = vec![
            f32::NEG_INFINITY,
            -1000.0,
            -87.5,
            89.0,
            f32::INFINITY,
            f32::NAN,
        ];
        exp_in_place(&mut xs);
        assert_eq!(&xs[..5], &[0.0, 0.0, 0.0, f32::INFINITY, f32::INFINITY]);
        assert!(xs[5].is_nan());
        // A slice that is not a multiple of the vector width takes the same path.
        let mut odd: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        exp_in_place(&mut odd);
        assert!((odd[36] - 3.6f32.exp()).abs() < 1e-5);
    }

    #[test]
    fn sums() {
        let xs: Vec<f32> = (0..101).map(|i| i as f32).collect();
        assert_eq!(sum(&xs), 5050.0);
        assert_eq!(dot(&xs, &xs), (0..101).map(|i| (i * i) as f32).sum::<f32>());
        assert_eq!(max(&xs), 100.0);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }
}
