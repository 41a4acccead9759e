//! MTCNN's direct convolutions as 16-bit integer products (x86_64), the
//! integer twin of [`super::layers`]' `conv_direct`: the same tiles of
//! output pixels by [`NC`] output channels, the same whole-block stores, with
//! pairs of 16-bit multiplies summed into 32-bit lanes (the kernels of
//! [`crate::int16`], chosen by [`int_kernel`]):
//! - **AVX-512 VNNI** (`vpdpwssd`): one 512-bit register per pixel holds
//!   the 16 channels' sums; tiles of 12 pixels (12 independent sums hide the
//!   instruction's latency).
//! - **AVX2** (`vpmaddwd`, `vpaddd`): two registers per pixel; tiles of 6
//!   pixels, 12 sums, as `conv_direct`'s f32 tiles.
//! - **AVX-VNNI** (`vpdpwssd` on 256 bits): the AVX2 tiles, one instruction
//!   per product and sum instead of two.
//!
//! A pixel's inputs for one kernel row are `k * cin` contiguous values in
//! NHWC, so consecutive pairs of them are one 32-bit word of the rounded
//! input, broadcast to every channel's lane; the packed weights hold the
//! matching pairs. An odd row length pairs its last value with the next one
//! in memory, whose weight is zero.
//!
//! Weights are rounded with one scale per output channel, the input with
//! one scale per call. The integer ranges come from the weights themselves:
//! a channel's largest sum is its integer weights' magnitudes summed times
//! the input's largest integer, and both are chosen so that this fits in an
//! `i32` (about twice the steps of assuming every weight at its largest, as
//! [`crate::int16`] does), so no sum can wrap. Both kernels compute the
//! same sums and the same f32 steps after them (`sum * scale + bias`, then
//! PReLU), so they give the same values. Boxes and landmarks move by a few
//! hundredths of a pixel; [`super::DetectParams::f32_convolutions`] keeps
//! the f32 convolutions (see the model README).

// Only x86_64 has the kernels; elsewhere the layer is never built.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

use std::cell::RefCell;
use std::mem::MaybeUninit;

use super::layers::{ConvGeometry, NC};
use crate::int16::{int_kernel, largest_int, IntKernel};
use crate::simd::SimdLevel;

/// A convolution's weights, bias and PReLU slopes for the integer kernels.
#[derive(Debug, Clone)]
pub(super) struct Int16Conv {
    k: usize,
    cout: usize,
    /// Values of one kernel row: `k * cin`.
    seg: usize,
    /// Pairs per kernel row: `ceil(seg / 2)`.
    pairs: usize,
    /// Largest integer magnitude of a weight or an input value.
    q: f32,
    /// `[block][ky][pairs][NC]` words; each holds the weights of row values
    /// `2m` (low half) and `2m + 1` (high half), zero past the row and past
    /// the last channel.
    w: Vec<i32>,
    /// Per padded channel: the weight one integer step stands for (0 past
    /// the last channel).
    scale: Vec<f32>,
    /// Per padded channel.
    bias: Vec<f32>,
    /// Per padded channel; 1 (identity) without PReLU.
    slope: Vec<f32>,
}

thread_local! {
    /// The rounded input of the current call, reused between calls.
    static ROUNDED_INPUT: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
}

impl Int16Conv {
    /// Rounds a `(k * k * cin, cout)` row-major weight matrix, rows ordered
    /// (kh, kw, cin) as `conv_direct`'s. `None` when a weight is not finite
    /// or the layer has too many terms for 16-bit integers (the f32
    /// convolution then runs).
    pub(super) fn new(w: &[f32], k: usize, cin: usize, cout: usize, bias: &[f32], slope: Option<&[f32]>) -> Option<Self> {
        let (seg, kk) = (k * cin, k * k * cin);
        assert_eq!(w.len(), kk * cout, "int16 conv: {kk}x{cout} weights needed");
        if kk == 0 || cout == 0 || w.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let pairs = seg.div_ceil(2);
        let blocks = cout.div_ceil(NC);
        // The largest sum a channel can reach is its weights' integer
        // magnitudes summed, times the input's largest integer. With `r` the
        // channel's sum of magnitudes over its largest one, both sides get
        // `sqrt(i32::MAX / r)` (the largest `r` sets the input's), instead
        // of `sqrt(i32::MAX / terms)` when every weight is assumed largest.
        let column = |c: usize| (0..kk).map(move |j| w[j * cout + c]);
        // Per channel: its largest weight magnitude and that ratio `r`.
        let sizes: Vec<(f32, f64)> = (0..cout)
            .map(|c| {
                let max = column(c).fold(0f32, |m, v| m.max(v.abs()));
                (max, if max == 0.0 { 0.0 } else { column(c).map(|v| (v.abs() / max) as f64).sum() })
            })
            .collect();
        let q = largest_int(sizes.iter().fold(1f64, |m, &(_, r)| m.max(r)));
        let mut packed = vec![0i32; blocks * k * pairs * NC];
        let mut scale = vec![0f32; blocks * NC];
        for (c, (step, &(max, ratio))) in scale.iter_mut().zip(&sizes).enumerate() {
            if max == 0.0 {
                continue;
            }
            // This channel's own largest integer: as large as its sum allows
            // against inputs up to `q`, less for every rounding that pushes
            // the sum over.
            let mut qw = (i32::MAX as f64 / (q as f64 * ratio)).floor().min(i16::MAX as f64) as f32;
            let ints = loop {
                if qw < 1.0 {
                    // Too many terms for 16-bit integers (far beyond MTCNN's).
                    return None;
                }
                let inv = qw / max;
                let ints: Vec<i32> = column(c).map(|v| (v * inv).round().clamp(-qw, qw) as i32).collect();
                let sum: i64 = ints.iter().map(|v| v.unsigned_abs() as i64).sum();
                if sum * q as i64 <= i32::MAX as i64 {
                    break ints;
                }
                qw -= 1.0;
            };
            *step = max / qw;
            // Row value `j` of kernel row `ky`; zero past the row.
            let int = |ky: usize, j: usize| if j < seg { ints[ky * seg + j] } else { 0 };
            let (b, lane) = (c / NC, c % NC);
            for ky in 0..k {
                for m in 0..pairs {
                    let (lo, hi) = (int(ky, 2 * m), int(ky, 2 * m + 1));
                    packed[((b * k + ky) * pairs + m) * NC + lane] = (lo & 0xffff) | (hi << 16);
                }
            }
        }
        let pad = |v: &[f32], fill: f32| {
            let mut p = v.to_vec();
            p.resize(blocks * NC, fill);
            p
        };
        Some(Self { k, cout, seg, pairs, q, w: packed, scale, bias: pad(bias, 0.0), slope: pad(slope.unwrap_or(&[]), 1.0) })
    }

    /// The convolution of `x` (NHWC, sizes `g`) into `out`, as
    /// `conv_direct` writes it: `n * oh * ow * cout` values plus [`NC`] of
    /// slack, every value before the slack written. Returns `false`,
    /// writing nothing, when no integer kernel runs on `level` here or `x`
    /// holds a value that is not finite.
    pub(super) fn forward(&self, level: SimdLevel, g: &ConvGeometry, x: &[f32], out: &mut [MaybeUninit<f32>]) -> bool {
        assert_eq!((g.k, g.k * g.cin, g.cout), (self.k, self.seg, self.cout), "int16 conv: geometry");
        assert_eq!(x.len(), g.n * g.h * g.w * g.cin, "int16 conv: input size");
        assert_eq!(out.len(), g.n * g.oh * g.ow * g.cout + NC, "int16 conv: output size");
        assert!(g.oh + g.k - 1 <= g.h && g.ow + g.k - 1 <= g.w, "int16 conv: output larger than the input allows");
        #[cfg(target_arch = "x86_64")]
        {
            let Some(kernel) = int_kernel(level) else { return false };
            // Taken out of the cell for the call (a nested call on this
            // thread would find it empty and allocate its own).
            let mut xq = ROUNDED_INPUT.with(|cell| cell.take());
            // SAFETY: `int_kernel` checked the CPU's features (AVX2 and FMA
            // for both kernels; AVX-512 F, VL and VNNI for `Vnni`). `out`
            // holds every value written (asserted above), and the kernels
            // read the rounded input within `xq` (the quantizer pads it).
            let done = unsafe {
                match x86::round_input(x, self.q, &mut xq) {
                    None => false,
                    Some(input_scale) => {
                        let out = out.as_mut_ptr() as *mut f32;
                        match kernel {
                            IntKernel::Vnni => x86::vnni(self, g, &xq, input_scale, out),
                            IntKernel::AvxVnni => x86::avxvnni(self, g, &xq, input_scale, out),
                            IntKernel::Madd => x86::madd(self, g, &xq, input_scale, out),
                        }
                        true
                    }
                }
            };
            ROUNDED_INPUT.with(|cell| cell.replace(xq));
            done
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (level, out);
            false
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use crate::int16::x86::{dpwssd_avx, input_step};
    use std::arch::x86_64::*;

    /// Rounded values past the input: the last pixel's odd row pairs its
    /// last value with the one after it (whose weight is zero).
    const SLACK: usize = 2;

    /// Rounds `x` to 16-bit integers in `dst` (`x.len() + SLACK` values,
    /// zeros past `x`), at most `q` in magnitude. Returns the value one
    /// integer step stands for, or `None` when a value is not finite.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn round_input(x: &[f32], q: f32, dst: &mut Vec<i16>) -> Option<f32> {
        let (scale, inv) = input_step(x, q)?;
        // Every value before the slack is written below.
        let dst = crate::memory::scratch(dst, x.len() + SLACK);
        dst[x.len()..].fill(0);
        let (invv, qmax, qmin) = (_mm256_set1_ps(inv), _mm256_set1_epi32(q as i32), _mm256_set1_epi32(-(q as i32)));
        // `vcvtps2dq` rounds to nearest, ties to even; so does the tail.
        let round = |v: __m256| _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v, invv)), qmax), qmin);
        let whole = x.len() / 16 * 16;
        for i in (0..whole).step_by(16) {
            let lo = round(_mm256_loadu_ps(x.as_ptr().add(i)));
            let hi = round(_mm256_loadu_ps(x.as_ptr().add(i + 8)));
            // `vpackssdw` packs per 128-bit half: put the quarters back in order.
            let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(lo, hi));
            _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, packed);
        }
        for i in whole..x.len() {
            dst[i] = ((x[i] * inv).round_ties_even() as i32).clamp(-(q as i32), q as i32) as i16;
        }
        Some(scale)
    }

    /// Calls `tile(block, first pixel, its pixels' input offsets)` for
    /// every tile of `R` output pixels of every block of channels, the last
    /// block first and pixels in order (see `conv_direct` for why), and
    /// `one(block, pixel, offset)` for the pixels of an output smaller than
    /// a tile. A last partial tile is redone as the last `R` pixels.
    #[inline(always)]
    fn each_tile<const R: usize>(g: &ConvGeometry, mut tile: impl FnMut(usize, usize, [usize; R]), mut one: impl FnMut(usize, usize, [usize; 1])) {
        let pixels = g.n * g.oh * g.ow;
        for b in (0..g.cout.div_ceil(NC)).rev() {
            if pixels < R {
                (0..pixels).for_each(|q| one(b, q, g.tile_bases(q)));
                continue;
            }
            let (mut q, mut walk) = (0, g.walk_from(0));
            while q + R <= pixels {
                tile(b, q, g.next_bases(&mut walk));
                q += R;
            }
            if q < pixels {
                tile(b, pixels - R, g.tile_bases(pixels - R));
            }
        }
    }

    /// The 32-bit word of rounded inputs `at`, `at + 1`, in every lane.
    #[inline(always)]
    unsafe fn pair_at(xq: *const i16, at: usize) -> i32 {
        (xq.add(at) as *const i32).read_unaligned()
    }

    /// `pub(super) unsafe fn $name(c, g, xq, input_scale, out)`: the AVX2
    /// tiles on the `$features` CPU features, `$vnni` as [`madd_tile`]'s.
    /// (A macro, not a generic function: the tiles' closures must be
    /// compiled with the features, so they are written in the function
    /// that has them.)
    macro_rules! madd_kernel {
        ($(#[$attr:meta])* $name:ident, $features:literal, $vnni:literal) => {
            $(#[$attr])*
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(c: &Int16Conv, g: &ConvGeometry, xq: &[i16], input_scale: f32, out: *mut f32) {
                let xq = xq.as_ptr();
                if c.cout <= 8 {
                    each_tile::<12>(
                        g,
                        |b, q, bases| madd_tile::<12, 1, $vnni>(c, g, xq, input_scale, out, b, q, bases),
                        |b, q, bases| madd_tile::<1, 1, $vnni>(c, g, xq, input_scale, out, b, q, bases),
                    );
                } else {
                    each_tile::<6>(
                        g,
                        |b, q, bases| madd_tile::<6, 2, $vnni>(c, g, xq, input_scale, out, b, q, bases),
                        |b, q, bases| madd_tile::<1, 2, $vnni>(c, g, xq, input_scale, out, b, q, bases),
                    );
                }
            }
        };
    }

    madd_kernel!(
        /// AVX2: tiles of 6 pixels, each pixel's 16 channels in two registers;
        /// for a layer of at most 8 channels (P-Net's head), tiles of 12 pixels
        /// with one register each, whose stores of 8 values spill over as the
        /// blocks of 16 do (see `conv_direct`).
        ///
        /// # Safety
        /// The CPU must have AVX2 and FMA; `xq` is `x` rounded by
        /// [`round_input`] and `out` holds the values `conv_direct` writes.
        madd, "avx2,fma", false
    );

    madd_kernel!(
        /// AVX-VNNI: [`madd`]'s tiles with `vpdpwssd` on 256 bits.
        ///
        /// # Safety
        /// The CPU must have AVX2, FMA and AVX-VNNI; the rest as for [`madd`].
        avxvnni, "avx2,fma,avxvnni", true
    );

    /// [`madd`]'s tile: `R` pixels from `q` on (inputs from `bases`), the
    /// first `H` halves (8 channels each) of channel block `b`; with `VNNI`,
    /// AVX-VNNI's `vpdpwssd` instead of `vpmaddwd` and `vpaddd` (the caller
    /// has the feature).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn madd_tile<const R: usize, const H: usize, const VNNI: bool>(
        c: &Int16Conv,
        g: &ConvGeometry,
        xq: *const i16,
        input_scale: f32,
        out: *mut f32,
        b: usize,
        q: usize,
        bases: [usize; R],
    ) {
        let mut acc = [[_mm256_setzero_si256(); H]; R];
        let wb = c.w.as_ptr().add(b * c.k * c.pairs * NC);
        for ky in 0..c.k {
            let (wk, xk) = (wb.add(ky * c.pairs * NC), xq.add(ky * g.w * g.cin));
            for m in 0..c.pairs {
                let wv: [__m256i; H] = std::array::from_fn(|h| _mm256_loadu_si256(wk.add(m * NC + h * 8) as *const __m256i));
                for (a, &base) in acc.iter_mut().zip(&bases) {
                    let xv = _mm256_set1_epi32(pair_at(xk, base + 2 * m));
                    for (a, &w) in a.iter_mut().zip(&wv) {
                        *a = if VNNI { dpwssd_avx(*a, xv, w) } else { _mm256_add_epi32(*a, _mm256_madd_epi16(xv, w)) };
                    }
                }
            }
        }
        // The block's scales, biases and slopes, once per tile (the stores
        // below may alias them as far as the compiler knows).
        let (s, zero) = (_mm256_set1_ps(input_scale), _mm256_setzero_ps());
        let per_half = |v: &[f32]| -> [__m256; H] { std::array::from_fn(|h| _mm256_loadu_ps(v.as_ptr().add(b * NC + h * 8))) };
        let (scale, bias, slope) = (per_half(&c.scale).map(|v| _mm256_mul_ps(s, v)), per_half(&c.bias), per_half(&c.slope));
        for (r, a) in acc.iter().enumerate() {
            let dst = out.add((q + r) * g.cout + b * NC);
            for (h, &sum) in a.iter().enumerate() {
                let t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale[h], bias[h]);
                // `max(t, 0) + min(t, 0) * slope`, as conv_direct.
                let v = _mm256_add_ps(_mm256_max_ps(t, zero), _mm256_mul_ps(_mm256_min_ps(t, zero), slope[h]));
                _mm256_storeu_ps(dst.add(h * 8), v);
            }
        }
    }

    /// AVX-512 VNNI: tiles of 12 pixels, each pixel's 16 channels in one
    /// register.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA, AVX-512 F, VL and VNNI; the rest as for
    /// [`madd`].
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
    pub(super) unsafe fn vnni(c: &Int16Conv, g: &ConvGeometry, xq: &[i16], input_scale: f32, out: *mut f32) {
        const R: usize = 12;
        let xq = xq.as_ptr();
        each_tile::<R>(
            g,
            |b, q, bases| vnni_tile::<R>(c, g, xq, input_scale, out, b, q, bases),
            |b, q, bases| vnni_tile::<1>(c, g, xq, input_scale, out, b, q, bases),
        );
    }

    /// [`vnni`]'s tile: `R` pixels from `q` on (inputs from `bases`),
    /// channel block `b`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn vnni_tile<const R: usize>(c: &Int16Conv, g: &ConvGeometry, xq: *const i16, input_scale: f32, out: *mut f32, b: usize, q: usize, bases: [usize; R]) {
        let mut acc = [_mm512_setzero_si512(); R];
        let wb = c.w.as_ptr().add(b * c.k * c.pairs * NC);
        for ky in 0..c.k {
            let (wk, xk) = (wb.add(ky * c.pairs * NC), xq.add(ky * g.w * g.cin));
            for m in 0..c.pairs {
                let wv = _mm512_loadu_si512(wk.add(m * NC) as *const _);
                for (a, &base) in acc.iter_mut().zip(&bases) {
                    *a = _mm512_dpwssd_epi32(*a, _mm512_set1_epi32(pair_at(xk, base + 2 * m)), wv);
                }
            }
        }
        let ch = b * NC;
        let scale = _mm512_mul_ps(_mm512_set1_ps(input_scale), _mm512_loadu_ps(c.scale.as_ptr().add(ch)));
        let (bias, slope, zero) = (_mm512_loadu_ps(c.bias.as_ptr().add(ch)), _mm512_loadu_ps(c.slope.as_ptr().add(ch)), _mm512_setzero_ps());
        for (r, &sum) in acc.iter().enumerate() {
            let t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, bias);
            let v = _mm512_add_ps(_mm512_max_ps(t, zero), _mm512_mul_ps(_mm512_min_ps(t, zero), slope));
            _mm512_storeu_ps(out.add((q + r) * g.cout + ch), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int16::test_support::{levels_here, levels_to_compare, values};

    fn geometry(n: usize, h: usize, w: usize, cin: usize, cout: usize, k: usize) -> ConvGeometry {
        ConvGeometry { n, h, w, cin, k, oh: h - k + 1, ow: w - k + 1, cout }
    }

    /// Runs the layer on `level`; `None` when it declined.
    fn run(conv: &Int16Conv, level: SimdLevel, g: &ConvGeometry, x: &[f32]) -> Option<Vec<f32>> {
        let len = g.n * g.oh * g.ow * g.cout;
        let mut out = vec![MaybeUninit::new(f32::NAN); len + NC];
        conv.forward(level, g, x, &mut out).then(|| out[..len].iter().map(|v| unsafe { v.assume_init() }).collect())
    }

    /// The exact result in f64, and per output the most the two roundings
    /// can move it: half an input step times the weights' magnitudes plus
    /// half the channel's weight step times the inputs' magnitudes (and
    /// their product), before PReLU (slopes are at most 1 here).
    fn reference(g: &ConvGeometry, w: &[f32], x: &[f32], bias: &[f32], slope: &[f32], conv: &Int16Conv) -> (Vec<f32>, Vec<f32>) {
        let xmax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let xstep = (xmax / conv.q) as f64;
        let (mut want, mut bound) = (Vec::new(), Vec::new());
        for img in 0..g.n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    for c in 0..g.cout {
                        let wstep = conv.scale[c] as f64;
                        let (mut s, mut e) = (bias[c] as f64, 1e-5);
                        for ky in 0..g.k {
                            for j in 0..g.k * g.cin {
                                let wv = w[((ky * g.k * g.cin) + j) * g.cout + c] as f64;
                                let xv = x[((img * g.h + oy + ky) * g.w + ox) * g.cin + j] as f64;
                                s += wv * xv;
                                e += wv.abs() * xstep / 2.0 + xv.abs() * wstep / 2.0 + xstep * wstep / 4.0;
                            }
                        }
                        let t = if s > 0.0 { s } else { s * slope[c] as f64 };
                        want.push(t as f32);
                        bound.push((e * (1.0 + 1e-4) + t.abs() * 1e-6) as f32);
                    }
                }
            }
        }
        (want, bound)
    }

    /// (n, h, w, cin, cout, k): MTCNN's own layers (P-Net's first three on
    /// a small level, R-Net's, O-Net's), odd rows (3 x 3
    /// values per row), fewer pixels than a tile, channels that do not fill
    /// a block (6, 10, 17, 28: the last block's whole stores spill over),
    /// several images, a 1x1 kernel.
    const SHAPES: [(usize, usize, usize, usize, usize, usize); 14] = [
        (1, 20, 23, 3, 10, 3),
        (1, 9, 10, 10, 16, 3),
        (1, 7, 8, 16, 32, 3),
        (1, 5, 7, 32, 6, 1),
        (5, 24, 24, 3, 28, 3),
        (5, 11, 11, 28, 48, 3),
        (5, 4, 4, 48, 64, 2),
        (2, 48, 48, 3, 32, 3),
        (2, 23, 23, 32, 64, 3),
        (3, 10, 10, 64, 64, 3),
        (3, 4, 4, 64, 128, 2),
        (1, 3, 3, 4, 17, 3),
        (1, 3, 4, 3, 6, 3),
        (2, 3, 5, 5, 3, 2),
    ];

    #[test]
    fn matches_the_exact_convolution_within_its_bound() {
        for level in levels_here() {
            for &(n, h, w, cin, cout, k) in &SHAPES {
                let g = geometry(n, h, w, cin, cout, k);
                let (wv, x, bias) = (values(k * k * cin * cout, 1), values(n * h * w * cin, 2), values(cout, 3));
                let slope: Vec<f32> = values(cout, 4).iter().map(|v| v.abs()).collect();
                let conv = Int16Conv::new(&wv, k, cin, cout, &bias, Some(&slope)).unwrap();
                let got = run(&conv, level, &g, &x).expect("the integer kernel runs");
                let (want, bound) = reference(&g, &wv, &x, &bias, &slope, &conv);
                for (i, ((a, b), e)) in got.iter().zip(&want).zip(&bound).enumerate() {
                    assert!((a - b).abs() <= *e, "{level} {:?} value {i}: {a} vs {b} (bound {e})", (n, h, w, cin, cout, k));
                }
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst <= 1e-3 * scale, "{level} {:?}: error {worst} vs values up to {scale}", (n, h, w, cin, cout, k));
            }
        }
    }

    #[test]
    fn both_kernels_give_the_same_values() {
        // Same rounding, same integer sums, same f32 steps after them: every
        // kernel (AVX-512 VNNI, AVX-VNNI, AVX2) answers the same, to the bit.
        let levels = levels_to_compare();
        for &(n, h, w, cin, cout, k) in &SHAPES {
            let g = geometry(n, h, w, cin, cout, k);
            let (wv, x, bias, slope) = (values(k * k * cin * cout, 5), values(n * h * w * cin, 6), values(cout, 7), values(cout, 8));
            let flat = vec![0.0; cout];
            for slope in [None, Some(&slope[..]), Some(&flat[..])] {
                let conv = Int16Conv::new(&wv, k, cin, cout, &bias, slope).unwrap();
                let outs: Vec<Vec<u32>> =
                    levels.iter().map(|&l| run(&conv, l, &g, &x).unwrap().iter().map(|v| v.to_bits()).collect()).collect();
                assert!(outs.windows(2).all(|o| o[0] == o[1]), "{:?}: the kernels differ", (n, h, w, cin, cout, k));
            }
        }
    }

    #[test]
    fn no_sum_can_overflow() {
        // Inputs at the largest magnitude, all of one sign, against weights
        // of one sign: every channel's sum at its largest. Channel 0 has
        // equal weights (the sum of magnitudes largest against the largest
        // weight), channel 1 one large weight among small ones (its weights
        // get the most integer steps), channel 2 is all zeros.
        for (cin, k) in [(3, 3), (28, 3), (48, 2), (64, 2), (512, 3)] {
            let (kk, cout) = (k * k * cin, 3);
            let mut w = vec![0f32; kk * cout];
            for j in 0..kk {
                w[j * cout] = 0.5;
                w[j * cout + 1] = if j == kk / 2 { 1.0 } else { 1e-3 };
            }
            let g = geometry(1, k + 1, k + 2, cin, cout, k);
            let x = vec![-4.0f32; g.h * g.w * cin];
            let conv = Int16Conv::new(&w, k, cin, cout, &[0.0; 3], None).unwrap();
            let want = [-2.0 * kk as f32, -4.0 * (1.0 + 1e-3 * (kk - 1) as f32), 0.0];
            for level in levels_here() {
                let got = run(&conv, level, &g, &x).unwrap();
                for (p, px) in got.chunks(cout).enumerate() {
                    for (c, (a, b)) in px.iter().zip(&want).enumerate() {
                        // Rounding moves channel 1 by up to half a step per
                        // small weight (0.7 % here); a wrapped sum would be
                        // off by about 2^32 steps.
                        assert!((a - b).abs() <= 1e-2 * b.abs().max(1.0), "{level} cin {cin} k {k} pixel {p} channel {c}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_sum_pushed_over_by_rounding_is_rounded_coarser() {
        // One weight of 1 and 26 of 0.5 (a 3x3 layer over 3 channels): the
        // ratio of the sum of magnitudes to the largest is 14, so inputs get
        // up to 12,385 steps and so do the weights; but each 0.5 rounds up
        // to 6,193, and the integer sum, 173,403 steps, times 12,385 would
        // pass `i32::MAX`. The channel must take a step fewer.
        let (k, cin) = (3, 3);
        let mut w = vec![0.5f32; k * k * cin];
        w[13] = 1.0;
        let conv = Int16Conv::new(&w, k, cin, 1, &[0.0], None).unwrap();
        let qw = (w[13] / conv.scale[0]).round() as i64;
        let sum: i64 = w.iter().map(|v| (v * qw as f32 / w[13]).round() as i64).sum();
        assert!(sum * conv.q as i64 <= i32::MAX as i64, "steps {qw}, sum {sum}, input steps {}", conv.q);
        let g = geometry(1, 3, 3, cin, 1, k);
        for level in levels_here() {
            for x in [vec![4.0f32; 27], vec![-4.0f32; 27]] {
                let got = run(&conv, level, &g, &x).unwrap()[0];
                let want = x[0] * 14.0;
                assert!((got - want).abs() <= 1e-3 * want.abs(), "{level}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn declines_what_it_cannot_round() {
        assert!(Int16Conv::new(&[1.0, f32::NAN, 0.0], 1, 3, 1, &[0.0], None).is_none());
        assert!(Int16Conv::new(&[], 1, 0, 1, &[0.0], None).is_none());
        let (wv, bias) = (values(27 * 4, 9), values(4, 10));
        let conv = Int16Conv::new(&wv, 3, 3, 4, &bias, None).unwrap();
        let g = geometry(1, 5, 5, 3, 4, 3);
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut x = values(75, 11);
                x[40] = bad;
                assert!(run(&conv, level, &g, &x).is_none(), "{level}: {bad} accepted");
            }
            // All zeros: the bias alone.
            if let Some(out) = run(&conv, level, &g, &[0.0; 75]) {
                for px in out.chunks(4) {
                    assert_eq!(px, &bias[..], "{level}");
                }
            }
        }
        assert!(int_kernel(SimdLevel::Baseline).is_none());
        assert!(int_kernel(SimdLevel::Neon).is_none());
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn inputs_too_small_for_a_finite_step_round_to_zeros() {
        if levels_here().is_empty() {
            return;
        }
        // `q / max` overflows f32: without the guard, the vector lanes
        // turned zeros and positive values into `-q`.
        for tiny in [1e-38f32, 1e-44, -3e-39] {
            let x: Vec<f32> = (0..37).map(|i| [0.0, tiny, -tiny][i % 3]).collect();
            let mut xq = Vec::new();
            // SAFETY: the CPU has AVX2 and FMA (`levels_here`).
            let scale = unsafe { x86::round_input(&x, 12_385.0, &mut xq) };
            assert_eq!(scale, Some(1.0), "{tiny}");
            assert!(xq.iter().all(|&v| v == 0), "{tiny}: {xq:?}");
        }
    }
}
