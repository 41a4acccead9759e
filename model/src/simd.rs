//! Which SIMD code path the model's own kernels take on this CPU.
//!
//! The hot loops of the model (depthwise convolutions in [`crate::depthwise`],
//! the pointwise epilogue in [`crate::pointwise`], MTCNN's layers) are
//! compiled several times with `#[multiversion]`, and the copy to run is
//! picked at run time from the CPU's features. The widest of them,
//! [`crate::depthwise`], has these targets:
//!
//! | target (`#[multiversion(targets(...))]`) | [`simd_path`] |
//! |---|---|
//! | `x86_64+avx512f+avx512vl+avx2+fma` | `"AVX-512"` |
//! | `x86_64+avx2+fma` | `"AVX2+FMA"` |
//! | `aarch64+neon` | `"NEON"` |
//! | none of them (the generic copy) | `"baseline (no SIMD dispatch)"` |
//!
//! The other kernels use multiversion's `"simd"` preset, whose widest x86_64
//! target is AVX2+FMA (they also have an SSE4.2 copy), and candle's matrix
//! multiplications dispatch on their own (AVX-512 / AVX2 / generic), so on a
//! baseline CPU some of the model still uses SSE, but it is several times
//! slower than on an AVX2 machine.
//!
//! There is no override: the kernels always dispatch on the detected
//! features (no environment variable forces a path), so neither does this
//! module.

/// [`simd_path`] on x86_64 CPUs with AVX-512 (F and VL) as well as AVX2 and FMA.
pub const AVX512: &str = "AVX-512";
/// [`simd_path`] on x86_64 CPUs with AVX2 and FMA but no AVX-512.
pub const AVX2_FMA: &str = "AVX2+FMA";
/// [`simd_path`] on aarch64 CPUs (NEON).
pub const NEON: &str = "NEON";
/// [`simd_path`] when none of the kernels' SIMD targets fits this CPU: the
/// generic (scalar, auto-vectorised for the build's baseline) code runs.
pub const BASELINE: &str = "baseline (no SIMD dispatch)";

/// Every name [`simd_path`] can return, fastest first.
pub const PATHS: [&str; 4] = [AVX512, AVX2_FMA, NEON, BASELINE];

/// The SIMD path the model's kernels take on this CPU, detected at run time
/// the way `#[multiversion]` dispatches [`crate::depthwise`]: one of
/// [`AVX512`] (`"AVX-512"`), [`AVX2_FMA`] (`"AVX2+FMA"`), [`NEON`]
/// (`"NEON"`) or [`BASELINE`] (`"baseline (no SIMD dispatch)"`).
///
/// A target is taken only when the CPU has every feature it lists (the
/// AVX-512 target needs avx512f, avx512vl, avx2 and fma).
pub fn simd_path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2_fma = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        if avx2_fma
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return AVX512;
        }
        if avx2_fma {
            return AVX2_FMA;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            return NEON;
        }
    }
    BASELINE
}

/// The SIMD features of this CPU that matter to the model, as detected at
/// run time, in a fixed order: on x86_64 any of `avx512f`, `avx512vl`,
/// `avx2`, `fma`, `sse4.2`; on aarch64 `neon`. Empty on other
/// architectures or a CPU with none of them.
pub fn cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let all = [
            ("avx512f", has!("avx512f")),
            ("avx512vl", has!("avx512vl")),
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("sse4.2", has!("sse4.2")),
        ];
        found.extend(all.into_iter().filter(|(_, on)| *on).map(|(name, _)| name));
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            found.push("neon");
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_path_is_one_of_the_names() {
        let p = simd_path();
        assert!(PATHS.contains(&p), "unexpected SIMD path {p:?}");
    }

    #[test]
    fn simd_path_agrees_with_the_detected_features() {
        let f = cpu_features();
        let has = |n: &str| f.contains(&n);
        let expected = if has("avx512f") && has("avx512vl") && has("avx2") && has("fma") {
            AVX512
        } else if has("avx2") && has("fma") {
            AVX2_FMA
        } else if has("neon") {
            NEON
        } else {
            BASELINE
        };
        assert_eq!(simd_path(), expected, "features: {f:?}");
    }
}
