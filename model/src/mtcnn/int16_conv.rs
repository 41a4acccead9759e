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
//! - **SSE2** (`pmaddwd`, `paddd` on 128 bits: x86_64's baseline level, what
//!   a CPU without AVX2 runs): four registers per pixel; tiles of 2 pixels.
//!
//! (In the F(2, 3) form below, a tile's pixels are pairs, and the sums of
//! its earlier transforms wait in memory while the next one's run.)
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
//! [`crate::int16`] does), so no sum can wrap. Every kernel computes the
//! same sums and the same f32 steps after them (`sum * scale + bias`, a
//! product then a sum, no FMA, which SSE2 lacks; then PReLU), so they give
//! the same values, to the bit. Boxes and landmarks move by a few
//! hundredths of a pixel; [`super::DetectParams::f32_convolutions`] keeps
//! the f32 convolutions (see the model README).
//!
//! **3x3 layers over [`WINOGRAD_MIN_CIN`] or more channels** (P-Net's
//! third, R-Net's second, O-Net's second and third) run in Winograd's
//! F(2, 3) form along the rows (Lavin & Gray, CVPR 2016, in one dimension):
//! two neighbouring output pixels of a row take 4 products per kernel row
//! and channel instead of 6. The input is transformed once per call into
//! four rows of sums and differences of neighbouring pixels (`d0 - d2`,
//! `d1 + d2`, `d2 - d1`, `d1 - d3`, with `d[s]` the value `s` pixels on),
//! each weight row `g0, g1, g2` into `g0, (g0 + g1 + g2) / 2,
//! (g0 - g1 + g2) / 2, g2`; each transform is then a 3-row convolution of
//! `cin` values a row with the tiles above, and the pair's pixels are the
//! sum of the first three results and the second minus the last two. All
//! of it is integer arithmetic: weights are rounded so that each row's
//! three sum to an even number (`even_rows`), so the halves are whole, and
//! the pixels' sums are exactly the direct form's with those weights, to
//! the bit (the partial sums may wrap; the final ones fit, as above).
//! Inputs and weights get a bit less room (the transforms double the one
//! and add half again to the other), which no MTCNN layer needs. 1.2–1.4x
//! faster per layer on AVX2 and AVX-512 (the model README); under 16
//! channels (P-Net's second layer, 10) the transforms cost what it saves.

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
    /// The same integer weights in F(2, 3) form (see the module docs), for
    /// 3x3 kernels over at least [`WINOGRAD_MIN_CIN`] channels:
    /// `[block][t][ky][cin pairs][NC]` words for the four transforms `t`,
    /// each holding the weights of channels `2m` and `2m + 1`, zero past the
    /// channels. When present, `forward` runs this form, not `w`.
    winograd: Option<Vec<i32>>,
}

/// Fewest input channels for which a 3x3 layer runs in its F(2, 3) form
/// (see the module docs).
const WINOGRAD_MIN_CIN: usize = 16;

/// Makes every kernel row's three weights of one input channel sum to an
/// even number (so that the F(2, 3) form's halves are whole), for a 3x3
/// kernel's rounded weights `ints` (rows ordered (ky, kx, channel)), within
/// `[-qw, qw]`, and the values they round: where a sum is odd, one weight
/// moves by one step, the one whose move adds the least to its distance
/// from its value (the one nearest to halfway between two integers, moving
/// across; a weight clamped at `qw` can only move inward).
fn even_rows(ints: &mut [i32], exact: &[f32], cin: usize, qw: i32) {
    for ky in 0..3 {
        for ch in 0..cin {
            let at = [0, 1, 2].map(|kx| (ky * 3 + kx) * cin + ch);
            if at.iter().map(|&i| ints[i]).sum::<i32>() % 2 == 0 {
                continue;
            }
            // Each weight's move, to the other side of its value where the
            // range allows, and what it costs.
            let moves = at.map(|i| {
                let across = if exact[i] > ints[i] as f32 { 1 } else { -1 };
                let to = if (ints[i] + across).abs() <= qw { ints[i] + across } else { ints[i] - across };
                (i, to, (exact[i] - to as f32).abs() - (exact[i] - ints[i] as f32).abs())
            });
            let (i, to, _) = moves.into_iter().min_by(|a, b| a.2.total_cmp(&b.2)).unwrap();
            ints[i] = to;
        }
    }
}

thread_local! {
    /// The rounded input of the current call, reused between calls.
    static ROUNDED_INPUT: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
    /// Its four F(2, 3) transforms, likewise.
    static TRANSFORMED_INPUT: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
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
        // The F(2, 3) form (see the module docs) transforms inputs into sums and
        // differences of two (up to twice the integers) and each kernel
        // row's weights `g0, g1, g2` into `g0, (g0 + g1 + g2) / 2,
        // (g0 - g1 + g2) / 2, g2` (up to 1.5 times): room for both in an
        // `i16`, and weights rounded so that the halves are whole.
        let winograd = k == 3 && cin >= WINOGRAD_MIN_CIN;
        let (input_cap, weight_cap) = if winograd { ((i16::MAX / 2) as f32, (i16::MAX as f32 / 1.5).floor()) } else { (f32::MAX, f32::MAX) };
        let q = largest_int(sizes.iter().fold(1f64, |m, &(_, r)| m.max(r))).min(input_cap);
        let mut packed = vec![0i32; blocks * k * pairs * NC];
        let cin_pairs = cin.div_ceil(2);
        let mut rows = vec![0i32; if winograd { blocks * 12 * cin_pairs * NC } else { 0 }];
        let mut scale = vec![0f32; blocks * NC];
        for (c, (step, &(max, ratio))) in scale.iter_mut().zip(&sizes).enumerate() {
            if max == 0.0 {
                continue;
            }
            // This channel's own largest integer: as large as its sum allows
            // against inputs up to `q`, less for every rounding that pushes
            // the sum over.
            let mut qw = (i32::MAX as f64 / (q as f64 * ratio)).floor().min(i16::MAX as f64).min(weight_cap as f64) as f32;
            let ints = loop {
                if qw < 1.0 {
                    // Too many terms for 16-bit integers (far beyond MTCNN's).
                    return None;
                }
                let inv = qw / max;
                let exact: Vec<f32> = column(c).map(|v| v * inv).collect();
                let mut ints: Vec<i32> = exact.iter().map(|v| v.round().clamp(-qw, qw) as i32).collect();
                if winograd {
                    even_rows(&mut ints, &exact, cin, qw as i32);
                }
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
            if winograd {
                // `g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2` (whole:
                // `even_rows`) for the three weights `g` of kernel row `ky`
                // and input channel `ch`; zero past the channels.
                let u = |t: usize, ky: usize, ch: usize| {
                    if ch >= cin {
                        return 0;
                    }
                    let [g0, g1, g2] = [0, 1, 2].map(|kx| ints[ky * seg + kx * cin + ch]);
                    [g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2][t]
                };
                for t in 0..4 {
                    for ky in 0..3 {
                        for m in 0..cin_pairs {
                            let (lo, hi) = (u(t, ky, 2 * m), u(t, ky, 2 * m + 1));
                            rows[(((b * 4 + t) * 3 + ky) * cin_pairs + m) * NC + lane] = (lo & 0xffff) | (hi << 16);
                        }
                    }
                }
            }
        }
        let pad = |v: &[f32], fill: f32| {
            let mut p = v.to_vec();
            p.resize(blocks * NC, fill);
            p
        };
        let (bias, slope) = (pad(bias, 0.0), pad(slope.unwrap_or(&[]), 1.0));
        Some(Self { k, cout, seg, pairs, q, w: packed, scale, bias, slope, winograd: winograd.then_some(rows) })
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
            // for all kernels but SSE2's, which every x86_64 CPU has;
            // AVX-512 F, VL and VNNI for `Vnni`). `out` holds every value
            // written (asserted above), and the kernels read the rounded
            // input within `xq` (the quantizer pads it for the form that
            // runs) and its transforms within `xt`.
            let done = unsafe {
                let slack = if self.winograd.is_some() { x86::transform_slack(g.cin) } else { x86::SLACK };
                let rounded = match kernel {
                    IntKernel::Sse2 => x86::sse2::round_input(x, self.q, slack, &mut xq),
                    _ => x86::round_input(x, self.q, slack, &mut xq),
                };
                match rounded {
                    None => false,
                    Some(input_scale) => {
                        let out = out.as_mut_ptr() as *mut f32;
                        match &self.winograd {
                            Some(rows) => {
                                let mut xt = TRANSFORMED_INPUT.with(|cell| cell.take());
                                match kernel {
                                    IntKernel::Sse2 => x86::sse2::transform(&xq, g, &mut xt),
                                    _ => x86::transform(&xq, g, &mut xt),
                                }
                                let len = x86::transformed_len(g);
                                let f = x86::Transformed { rows, x: &xt[..4 * len], len };
                                match kernel {
                                    IntKernel::Vnni => x86::vnni_rows(self, &f, g, input_scale, out),
                                    IntKernel::AvxVnni => x86::avxvnni_rows(self, &f, g, input_scale, out),
                                    IntKernel::Madd => x86::madd_rows(self, &f, g, input_scale, out),
                                    IntKernel::Sse2 => x86::sse2_rows(self, &f, g, input_scale, out),
                                }
                                TRANSFORMED_INPUT.with(|cell| cell.replace(xt));
                            }
                            None => match kernel {
                                IntKernel::Vnni => x86::vnni(self, g, &xq, input_scale, out),
                                IntKernel::AvxVnni => x86::avxvnni(self, g, &xq, input_scale, out),
                                IntKernel::Madd => x86::madd(self, g, &xq, input_scale, out),
                                IntKernel::Sse2 => x86::sse2_direct(self, g, &xq, input_scale, out),
                            },
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

    /// Rounded values past the input the direct kernels read: the last
    /// pixel's odd row pairs its last value with the one after it (whose
    /// weight is zero).
    pub(super) const SLACK: usize = 2;

    /// The most values [`transform`] computes at a time (AVX2's 16, SSE2's
    /// 8): what the room after its input and its output is sized for.
    const TRANSFORM_STEP: usize = 16;

    /// Rounds `x` to 16-bit integers in `dst` (`x.len() + slack` values,
    /// zeros past `x`), at most `q` in magnitude. Returns the value one
    /// integer step stands for, or `None` when a value is not finite.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn round_input(x: &[f32], q: f32, slack: usize, dst: &mut Vec<i16>) -> Option<f32> {
        let (scale, inv) = input_step(x, q)?;
        // Every value before the slack is written below.
        let dst = crate::memory::scratch(dst, x.len() + slack);
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

    /// Values of each transform of [`transform`] for geometry `g`:
    /// `cin` per output pair of every input row, with room for the last
    /// pair's whole vectors.
    pub(super) fn transformed_len(g: &ConvGeometry) -> usize {
        g.n * g.h * g.ow.div_ceil(2) * g.cin + TRANSFORM_STEP
    }

    /// The four transforms of F(2, 3) of the rounded input `xq` (NHWC,
    /// sizes `g`, [`transform_slack`] values past the input) into `dst`,
    /// [`transformed_len`] values each: for every input row, pair `j` of
    /// output pixels and channel, with `d[s]` the channel's value at pixel
    /// `2j + s` of the row, `d0 - d2`, `d1 + d2`, `d2 - d1` and `d1 - d3`.
    /// Inputs of at most `i16::MAX / 2` in magnitude cannot wrap.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transform(xq: &[i16], g: &ConvGeometry, dst: &mut Vec<i16>) {
        transform_with::<Avx2>(xq, g, dst)
    }

    /// [`transform`] with `V`'s registers, a register's 16-bit values at a
    /// time (at most [`TRANSFORM_STEP`]).
    #[inline(always)]
    unsafe fn transform_with<V: Lanes>(xq: &[i16], g: &ConvGeometry, dst: &mut Vec<i16>) {
        let (cin, per_row, len) = (g.cin, g.ow.div_ceil(2), transformed_len(g));
        assert!(xq.len() >= g.n * g.h * g.w * cin + transform_slack(cin), "int16 conv: transform bounds");
        let dst = crate::memory::scratch(dst, 4 * len);
        let (src, out) = (xq.as_ptr(), dst.as_mut_ptr());
        for row in 0..g.n * g.h {
            for j in 0..per_row {
                let (from, to) = (src.add((row * g.w + 2 * j) * cin), out.add((row * per_row + j) * cin));
                // Whole vectors: the last one's excess lands on the next
                // pair's values, written after it, or on the room after all.
                for v in (0..cin).step_by(2 * V::WIDTH) {
                    let d0 = V::load16(from.add(v));
                    let d1 = V::load16(from.add(cin + v));
                    let d2 = V::load16(from.add(2 * cin + v));
                    let d3 = V::load16(from.add(3 * cin + v));
                    V::store16(to.add(v), V::sub16(d0, d2));
                    V::store16(to.add(len + v), V::add16(d1, d2));
                    V::store16(to.add(2 * len + v), V::sub16(d2, d1));
                    V::store16(to.add(3 * len + v), V::sub16(d1, d3));
                }
            }
        }
    }

    /// Rounded values past the input [`transform`] reads: whole vectors
    /// from the last input row's last pixel (or, where the output's width
    /// is odd, from the pixel after it).
    pub(super) fn transform_slack(cin: usize) -> usize {
        cin.div_ceil(TRANSFORM_STEP) * TRANSFORM_STEP
    }

    /// The F(2, 3) form's operands for one call: its packed weights (see
    /// [`Int16Conv::winograd`]) and the four transforms of the rounded
    /// input, `len` values apart.
    pub(super) struct Transformed<'a> {
        pub(super) rows: &'a [i32],
        pub(super) x: &'a [i16],
        pub(super) len: usize,
    }

    /// Two neighbouring output pixels of a row, which the F(2, 3) form
    /// computes together (the second past the row when its width is odd).
    #[derive(Debug, Clone, Copy)]
    struct Pair {
        /// Offset of the pair's first value in each transform.
        base: usize,
        /// Index of the first output pixel.
        q: usize,
        /// Whether the second pixel lies in the row.
        two: bool,
    }

    /// Calls `tile(block, pairs)` for every tile of `R` output pairs, in
    /// order, and for each tile every block of channels, the last first; a
    /// last partial tile is redone as the last `R` pairs, and an output of
    /// fewer than `R` pairs gets `one(block, pair)` for each. (Tile by
    /// tile, the transformed inputs of a tile stay in L1 for all its blocks;
    /// a block's store spilling past the layer's channels, see
    /// `conv_direct`, lands on the following pixels, whose own stores of
    /// those channels come after it, in this tile or a later one, so every
    /// value is written right at last.)
    #[inline(always)]
    fn each_pair_tile<const R: usize>(g: &ConvGeometry, mut tile: impl FnMut(usize, [Pair; R]), mut one: impl FnMut(usize, [Pair; 1])) {
        let per_row = g.ow.div_ceil(2);
        let count = g.n * g.oh * per_row;
        // The pair at `(image, row, pair in the row)`, which then steps to
        // the next one: no division.
        let step = |at: &mut (usize, usize, usize)| -> Pair {
            let (img, y, j) = *at;
            *at = if j + 1 < per_row { (img, y, j + 1) } else if y + 1 < g.oh { (img, y + 1, 0) } else { (img + 1, 0, 0) };
            let x = 2 * j;
            Pair { base: ((img * g.h + y) * per_row + j) * g.cin, q: (img * g.oh + y) * g.ow + x, two: x + 1 < g.ow }
        };
        let next = |at: &mut (usize, usize, usize)| -> [Pair; R] { std::array::from_fn(|_| step(at)) };
        let from = |p: usize| (p / per_row / g.oh, p / per_row % g.oh, p % per_row);
        let blocks = g.cout.div_ceil(NC);
        if count < R {
            let mut at = from(0);
            for _ in 0..count {
                let pair = step(&mut at);
                (0..blocks).rev().for_each(|b| one(b, [pair]));
            }
            return;
        }
        let (mut p, mut at) = (0, from(0));
        while p + R <= count {
            let pairs = next(&mut at);
            (0..blocks).rev().for_each(|b| tile(b, pairs));
            p += R;
        }
        if p < count {
            let pairs = next(&mut from(count - R));
            (0..blocks).rev().for_each(|b| tile(b, pairs));
        }
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

    /// One register of 32-bit sums and its f32 twin, for the tiles shared
    /// by the 256-bit kernels (AVX2, AVX-VNNI) and SSE2's 128-bit one. Its
    /// functions are inlined into the kernels, which have the CPU features.
    trait Lanes {
        /// 32-bit integer lanes.
        type I: Copy;
        /// f32 lanes.
        type F: Copy;
        /// Lanes per register.
        const WIDTH: usize;
        unsafe fn zero() -> Self::I;
        /// `WIDTH` words from `p`.
        unsafe fn load(p: *const i32) -> Self::I;
        /// `word` in every lane.
        unsafe fn splat(word: i32) -> Self::I;
        /// `acc +` the products of `x`'s and `w`'s 16-bit pairs, summed per
        /// 32-bit lane.
        unsafe fn madd(acc: Self::I, x: Self::I, w: Self::I) -> Self::I;
        unsafe fn add(a: Self::I, b: Self::I) -> Self::I;
        unsafe fn sub(a: Self::I, b: Self::I) -> Self::I;
        /// `WIDTH` values from `p`.
        unsafe fn load_f(p: *const f32) -> Self::F;
        /// `v` times `s`, lane by lane.
        unsafe fn scale_f(s: f32, v: Self::F) -> Self::F;
        /// `t = sum * scale + bias` (a product, then a sum), then
        /// `max(t, 0) + min(t, 0) * slope` (PReLU, as `conv_direct`), to
        /// `WIDTH` values at `dst`.
        unsafe fn store(dst: *mut f32, sum: Self::I, scale: Self::F, bias: Self::F, slope: Self::F);
        /// `WIDTH * 2` 16-bit values from `p`.
        unsafe fn load16(p: *const i16) -> Self::I;
        /// Stores `WIDTH * 2` 16-bit values to `p`.
        unsafe fn store16(p: *mut i16, v: Self::I);
        /// 16-bit lanes: `a + b`, `a - b`.
        unsafe fn add16(a: Self::I, b: Self::I) -> Self::I;
        unsafe fn sub16(a: Self::I, b: Self::I) -> Self::I;
    }

    /// AVX2's 256 bits, `vpmaddwd` then `vpaddd`.
    pub(super) struct Avx2;
    /// AVX2's 256 bits with AVX-VNNI's `vpdpwssd`.
    pub(super) struct AvxVnni;
    /// SSE2's 128 bits, `pmaddwd` then `paddd`.
    pub(super) struct Sse2;

    /// [`Lanes`] for the 256-bit kernels, whose `madd` is `$madd`.
    macro_rules! lanes_256 {
        ($t:ty, |$acc:ident, $x:ident, $w:ident| $madd:expr) => {
            impl Lanes for $t {
                type I = __m256i;
                type F = __m256;
                const WIDTH: usize = 8;
                #[inline(always)]
                unsafe fn zero() -> __m256i {
                    _mm256_setzero_si256()
                }
                #[inline(always)]
                unsafe fn load(p: *const i32) -> __m256i {
                    _mm256_loadu_si256(p as *const __m256i)
                }
                #[inline(always)]
                unsafe fn splat(word: i32) -> __m256i {
                    _mm256_set1_epi32(word)
                }
                #[inline(always)]
                unsafe fn madd($acc: __m256i, $x: __m256i, $w: __m256i) -> __m256i {
                    $madd
                }
                #[inline(always)]
                unsafe fn add(a: __m256i, b: __m256i) -> __m256i {
                    _mm256_add_epi32(a, b)
                }
                #[inline(always)]
                unsafe fn sub(a: __m256i, b: __m256i) -> __m256i {
                    _mm256_sub_epi32(a, b)
                }
                #[inline(always)]
                unsafe fn load_f(p: *const f32) -> __m256 {
                    _mm256_loadu_ps(p)
                }
                #[inline(always)]
                unsafe fn scale_f(s: f32, v: __m256) -> __m256 {
                    _mm256_mul_ps(_mm256_set1_ps(s), v)
                }
                #[inline(always)]
                unsafe fn store(dst: *mut f32, sum: __m256i, scale: __m256, bias: __m256, slope: __m256) {
                    let (t, zero) = (_mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sum), scale), bias), _mm256_setzero_ps());
                    _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_max_ps(t, zero), _mm256_mul_ps(_mm256_min_ps(t, zero), slope)));
                }
                #[inline(always)]
                unsafe fn load16(p: *const i16) -> __m256i {
                    _mm256_loadu_si256(p as *const __m256i)
                }
                #[inline(always)]
                unsafe fn store16(p: *mut i16, v: __m256i) {
                    _mm256_storeu_si256(p as *mut __m256i, v)
                }
                #[inline(always)]
                unsafe fn add16(a: __m256i, b: __m256i) -> __m256i {
                    _mm256_add_epi16(a, b)
                }
                #[inline(always)]
                unsafe fn sub16(a: __m256i, b: __m256i) -> __m256i {
                    _mm256_sub_epi16(a, b)
                }
            }
        };
    }
    lanes_256!(Avx2, |acc, x, w| _mm256_add_epi32(acc, _mm256_madd_epi16(x, w)));
    lanes_256!(AvxVnni, |acc, x, w| dpwssd_avx(acc, x, w));

    impl Lanes for Sse2 {
        type I = __m128i;
        type F = __m128;
        const WIDTH: usize = 4;
        #[inline(always)]
        unsafe fn zero() -> __m128i {
            _mm_setzero_si128()
        }
        #[inline(always)]
        unsafe fn load(p: *const i32) -> __m128i {
            _mm_loadu_si128(p as *const __m128i)
        }
        #[inline(always)]
        unsafe fn splat(word: i32) -> __m128i {
            _mm_set1_epi32(word)
        }
        #[inline(always)]
        unsafe fn madd(acc: __m128i, x: __m128i, w: __m128i) -> __m128i {
            _mm_add_epi32(acc, _mm_madd_epi16(x, w))
        }
        #[inline(always)]
        unsafe fn add(a: __m128i, b: __m128i) -> __m128i {
            _mm_add_epi32(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m128i, b: __m128i) -> __m128i {
            _mm_sub_epi32(a, b)
        }
        #[inline(always)]
        unsafe fn load_f(p: *const f32) -> __m128 {
            _mm_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn scale_f(s: f32, v: __m128) -> __m128 {
            _mm_mul_ps(_mm_set1_ps(s), v)
        }
        #[inline(always)]
        unsafe fn store(dst: *mut f32, sum: __m128i, scale: __m128, bias: __m128, slope: __m128) {
            let (t, zero) = (_mm_add_ps(_mm_mul_ps(_mm_cvtepi32_ps(sum), scale), bias), _mm_setzero_ps());
            _mm_storeu_ps(dst, _mm_add_ps(_mm_max_ps(t, zero), _mm_mul_ps(_mm_min_ps(t, zero), slope)));
        }
        #[inline(always)]
        unsafe fn load16(p: *const i16) -> __m128i {
            _mm_loadu_si128(p as *const __m128i)
        }
        #[inline(always)]
        unsafe fn store16(p: *mut i16, v: __m128i) {
            _mm_storeu_si128(p as *mut __m128i, v)
        }
        #[inline(always)]
        unsafe fn add16(a: __m128i, b: __m128i) -> __m128i {
            _mm_add_epi16(a, b)
        }
        #[inline(always)]
        unsafe fn sub16(a: __m128i, b: __m128i) -> __m128i {
            _mm_sub_epi16(a, b)
        }
    }

    /// `pub(super) unsafe fn $name(c, g, xq, input_scale, out)` and
    /// `pub(super) unsafe fn $rows(c, f, g, input_scale, out)`: the tiles of
    /// `$lanes` on the `$features` CPU features, for the direct form and the
    /// F(2, 3) form: `$r` pixels (pairs) by `$h` registers (all of a block's
    /// 16 channels), or `$r_small` by `$h_small` for a layer of at most 8
    /// channels. (A macro, not a generic function: the tiles' closures must
    /// be compiled with the features, so they are written in the function
    /// that has them.)
    macro_rules! madd_kernel {
        ($(#[$attr:meta])* $name:ident, $rows:ident, $features:literal, $lanes:ty, ($r:literal, $h:literal), ($r_small:literal, $h_small:literal)) => {
            $(#[$attr])*
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(c: &Int16Conv, g: &ConvGeometry, xq: &[i16], input_scale: f32, out: *mut f32) {
                let xq = xq.as_ptr();
                if c.cout <= 8 {
                    each_tile::<$r_small>(
                        g,
                        |b, q, bases| madd_tile::<$lanes, $r_small, $h_small>(c, g, xq, input_scale, out, b, q, bases),
                        |b, q, bases| madd_tile::<$lanes, 1, $h_small>(c, g, xq, input_scale, out, b, q, bases),
                    );
                } else {
                    each_tile::<$r>(
                        g,
                        |b, q, bases| madd_tile::<$lanes, $r, $h>(c, g, xq, input_scale, out, b, q, bases),
                        |b, q, bases| madd_tile::<$lanes, 1, $h>(c, g, xq, input_scale, out, b, q, bases),
                    );
                }
            }

            /// The F(2, 3) form of
            #[doc = concat!("[`", stringify!($name), "`]")]
            /// with the same tiles, of output pairs instead of pixels.
            ///
            /// # Safety
            #[doc = concat!("As for [`", stringify!($name), "`]; `f` holds the transforms of its input.")]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $rows(c: &Int16Conv, f: &Transformed, g: &ConvGeometry, input_scale: f32, out: *mut f32) {
                if c.cout <= 8 {
                    each_pair_tile::<$r_small>(
                        g,
                        |b, pairs| rows_tile::<$lanes, $r_small, $h_small>(c, f, g, input_scale, out, b, pairs),
                        |b, pairs| rows_tile::<$lanes, 1, $h_small>(c, f, g, input_scale, out, b, pairs),
                    );
                } else {
                    each_pair_tile::<$r>(
                        g,
                        |b, pairs| rows_tile::<$lanes, $r, $h>(c, f, g, input_scale, out, b, pairs),
                        |b, pairs| rows_tile::<$lanes, 1, $h>(c, f, g, input_scale, out, b, pairs),
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
        madd, madd_rows, "avx2,fma", Avx2, (6, 2), (12, 1)
    );

    madd_kernel!(
        /// AVX-VNNI: [`madd`]'s tiles with `vpdpwssd` on 256 bits.
        ///
        /// # Safety
        /// The CPU must have AVX2, FMA and AVX-VNNI; the rest as for [`madd`].
        avxvnni, avxvnni_rows, "avx2,fma,avxvnni", AvxVnni, (6, 2), (12, 1)
    );

    madd_kernel!(
        /// SSE2 (x86_64's baseline, every x86_64 CPU has it): a block's 16
        /// channels in four registers of 4; tiles of 2 pixels, 8 sums and
        /// the 4 registers of weights in SSE2's 16 (tiles of 3, 12 sums,
        /// spilled the weights and ran 13 % slower); for a layer of at most
        /// 8 channels, tiles of 6 pixels with two registers each, whose
        /// stores of 8 values spill over as AVX2's do.
        ///
        /// # Safety
        /// `xq` is `x` rounded by [`sse2::round_input`] and `out` holds the
        /// values `conv_direct` writes.
        sse2_direct, sse2_rows, "sse2", Sse2, (2, 4), (6, 2)
    );

    /// The sums of `R` pixels (inputs from `bases` in `x`) over `rows`
    /// kernel rows of `pairs` words each (`stride` values apart in `x`),
    /// for the first `H` registers of channels of the block of weights at
    /// `w` (`[rows][pairs][NC]` words).
    #[inline(always)]
    unsafe fn sums<V: Lanes, const R: usize, const H: usize>(
        w: *const i32,
        x: *const i16,
        rows: usize,
        pairs: usize,
        stride: usize,
        bases: &[usize; R],
    ) -> [[V::I; H]; R] {
        let mut acc = [[V::zero(); H]; R];
        for ky in 0..rows {
            let (wk, xk) = (w.add(ky * pairs * NC), x.add(ky * stride));
            for m in 0..pairs {
                let wv: [V::I; H] = std::array::from_fn(|h| V::load(wk.add(m * NC + h * V::WIDTH)));
                for (a, &base) in acc.iter_mut().zip(bases) {
                    let xv = V::splat(pair_at(xk, base + 2 * m));
                    for (a, &w) in a.iter_mut().zip(&wv) {
                        *a = V::madd(*a, xv, w);
                    }
                }
            }
        }
        acc
    }

    /// The f32 steps after the sums, for the first `H` registers of one
    /// block of channels: `sum * input_scale * scale + bias`, then PReLU,
    /// stored whole (see `conv_direct`).
    struct Finish<V: Lanes, const H: usize> {
        scale: [V::F; H],
        bias: [V::F; H],
        slope: [V::F; H],
        /// The block's first channel of output pixel 0.
        out: *mut f32,
        cout: usize,
    }

    impl<V: Lanes, const H: usize> Finish<V, H> {
        /// For channel block `b` of `out`. (The block's scales, biases and
        /// slopes are read once per tile: the stores may alias them as far
        /// as the compiler knows.)
        #[inline(always)]
        unsafe fn new(c: &Int16Conv, g: &ConvGeometry, input_scale: f32, out: *mut f32, b: usize) -> Self {
            let per_register = |v: &[f32]| -> [V::F; H] { std::array::from_fn(|h| V::load_f(v.as_ptr().add(b * NC + h * V::WIDTH))) };
            let (scale, bias, slope) = (per_register(&c.scale).map(|v| V::scale_f(input_scale, v)), per_register(&c.bias), per_register(&c.slope));
            Self { scale, bias, slope, out: out.add(b * NC), cout: g.cout }
        }

        /// Stores output pixel `q`'s sums.
        #[inline(always)]
        unsafe fn store(&self, q: usize, sums: &[V::I; H]) {
            let dst = self.out.add(q * self.cout);
            for (h, &sum) in sums.iter().enumerate() {
                V::store(dst.add(h * V::WIDTH), sum, self.scale[h], self.bias[h], self.slope[h]);
            }
        }
    }

    /// [`madd`]'s tile: `R` pixels from `q` on (inputs from `bases`), the
    /// first `H` registers of channel block `b`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn madd_tile<V: Lanes, const R: usize, const H: usize>(
        c: &Int16Conv,
        g: &ConvGeometry,
        xq: *const i16,
        input_scale: f32,
        out: *mut f32,
        b: usize,
        q: usize,
        bases: [usize; R],
    ) {
        let w = c.w.as_ptr().add(b * c.k * c.pairs * NC);
        let acc = sums::<V, R, H>(w, xq, c.k, c.pairs, g.w * g.cin, &bases);
        let finish = Finish::<V, H>::new(c, g, input_scale, out, b);
        for (r, sums) in acc.iter().enumerate() {
            finish.store(q + r, sums);
        }
    }

    /// [`sums`] over transform `t` of `f`: 3 rows of `cin` values, channel
    /// block `b`'s weights for `t`.
    #[inline(always)]
    unsafe fn transform_sums<V: Lanes, const R: usize, const H: usize>(
        f: &Transformed,
        g: &ConvGeometry,
        b: usize,
        t: usize,
        bases: &[usize; R],
    ) -> [[V::I; H]; R] {
        let cin_pairs = g.cin.div_ceil(2);
        let w = f.rows.as_ptr().add((b * 4 + t) * 3 * cin_pairs * NC);
        sums::<V, R, H>(w, f.x.as_ptr().add(t * f.len), 3, cin_pairs, g.ow.div_ceil(2) * g.cin, bases)
    }

    /// `a += b`, or `a -= b` with `subtract`, lane by lane.
    #[inline(always)]
    unsafe fn combine<V: Lanes, const R: usize, const H: usize>(a: &mut [[V::I; H]; R], b: &[[V::I; H]; R], subtract: bool) {
        for (a, b) in a.iter_mut().zip(b) {
            for (a, &b) in a.iter_mut().zip(b) {
                *a = if subtract { V::sub(*a, b) } else { V::add(*a, b) };
            }
        }
    }

    /// The F(2, 3) form's tile: `R` output pairs, the first `H` registers
    /// of channel block `b`. Each of the four transforms is a 3-row
    /// convolution of `cin` values a row with its own weights; the pair's
    /// first pixel is the sum of the first three results, its second the
    /// second minus the last two.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows_tile<V: Lanes, const R: usize, const H: usize>(
        c: &Int16Conv,
        f: &Transformed,
        g: &ConvGeometry,
        input_scale: f32,
        out: *mut f32,
        b: usize,
        pairs: [Pair; R],
    ) {
        // (Functions, not closures: a closure need not be inlined, and
        // then runs without the caller's CPU features.)
        let bases = pairs.map(|p| p.base);
        let mut first = transform_sums::<V, R, H>(f, g, b, 0, &bases);
        let mut second = transform_sums::<V, R, H>(f, g, b, 1, &bases);
        let sums = transform_sums::<V, R, H>(f, g, b, 2, &bases);
        combine::<V, R, H>(&mut first, &second, false);
        combine::<V, R, H>(&mut first, &sums, false);
        combine::<V, R, H>(&mut second, &sums, true);
        combine::<V, R, H>(&mut second, &transform_sums::<V, R, H>(f, g, b, 3, &bases), true);
        // Pixels in order (see `each_pair_tile`).
        let finish = Finish::<V, H>::new(c, g, input_scale, out, b);
        for (p, (first, second)) in pairs.iter().zip(first.iter().zip(&second)) {
            finish.store(p.q, first);
            if p.two {
                finish.store(p.q + 1, second);
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
            |b, q, bases| {
                let acc = vnni_sums::<R>(c.w.as_ptr().add(b * c.k * c.pairs * NC), xq, c.k, c.pairs, g.w * g.cin, &bases);
                let finish = VnniFinish::new(c, g, input_scale, out, b);
                for (r, &sum) in acc.iter().enumerate() {
                    finish.store(q + r, sum);
                }
            },
            |b, q, bases| {
                let acc = vnni_sums::<1>(c.w.as_ptr().add(b * c.k * c.pairs * NC), xq, c.k, c.pairs, g.w * g.cin, &bases);
                VnniFinish::new(c, g, input_scale, out, b).store(q, acc[0]);
            },
        );
    }

    /// The F(2, 3) form of [`vnni`], with the same tiles, of output pairs
    /// instead of pixels.
    ///
    /// # Safety
    /// As for [`vnni`]; `f` holds the transforms of its input.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
    pub(super) unsafe fn vnni_rows(c: &Int16Conv, f: &Transformed, g: &ConvGeometry, input_scale: f32, out: *mut f32) {
        each_pair_tile::<12>(
            g,
            |b, pairs| vnni_rows_tile::<12>(c, f, g, input_scale, out, b, pairs),
            |b, pairs| vnni_rows_tile::<1>(c, f, g, input_scale, out, b, pairs),
        );
    }

    /// [`sums`] for [`vnni`]: one register per pixel, all of a block's 16
    /// channels.
    #[inline(always)]
    unsafe fn vnni_sums<const R: usize>(w: *const i32, x: *const i16, rows: usize, pairs: usize, stride: usize, bases: &[usize; R]) -> [__m512i; R] {
        let mut acc = [_mm512_setzero_si512(); R];
        for ky in 0..rows {
            let (wk, xk) = (w.add(ky * pairs * NC), x.add(ky * stride));
            for m in 0..pairs {
                let wv = _mm512_loadu_si512(wk.add(m * NC) as *const _);
                for (a, &base) in acc.iter_mut().zip(bases) {
                    *a = _mm512_dpwssd_epi32(*a, _mm512_set1_epi32(pair_at(xk, base + 2 * m)), wv);
                }
            }
        }
        acc
    }

    /// [`Finish`] for [`vnni`]: all 16 channels of a block in one register.
    struct VnniFinish {
        scale: __m512,
        bias: __m512,
        slope: __m512,
        out: *mut f32,
        cout: usize,
    }

    impl VnniFinish {
        /// For channel block `b` of `out`.
        #[inline(always)]
        unsafe fn new(c: &Int16Conv, g: &ConvGeometry, input_scale: f32, out: *mut f32, b: usize) -> Self {
            let ch = b * NC;
            let scale = _mm512_mul_ps(_mm512_set1_ps(input_scale), _mm512_loadu_ps(c.scale.as_ptr().add(ch)));
            let (bias, slope) = (_mm512_loadu_ps(c.bias.as_ptr().add(ch)), _mm512_loadu_ps(c.slope.as_ptr().add(ch)));
            Self { scale, bias, slope, out: out.add(ch), cout: g.cout }
        }

        /// Stores output pixel `q`'s sums.
        #[inline(always)]
        unsafe fn store(&self, q: usize, sum: __m512i) {
            let (t, zero) = (_mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sum), self.scale), self.bias), _mm512_setzero_ps());
            let v = _mm512_add_ps(_mm512_max_ps(t, zero), _mm512_mul_ps(_mm512_min_ps(t, zero), self.slope));
            _mm512_storeu_ps(self.out.add(q * self.cout), v);
        }
    }

    /// [`transform_sums`] for [`vnni_rows`].
    #[inline(always)]
    unsafe fn vnni_transform_sums<const R: usize>(f: &Transformed, g: &ConvGeometry, b: usize, t: usize, bases: &[usize; R]) -> [__m512i; R] {
        let cin_pairs = g.cin.div_ceil(2);
        let w = f.rows.as_ptr().add((b * 4 + t) * 3 * cin_pairs * NC);
        vnni_sums::<R>(w, f.x.as_ptr().add(t * f.len), 3, cin_pairs, g.ow.div_ceil(2) * g.cin, bases)
    }

    /// [`rows_tile`] for [`vnni_rows`].
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn vnni_rows_tile<const R: usize>(c: &Int16Conv, f: &Transformed, g: &ConvGeometry, input_scale: f32, out: *mut f32, b: usize, pairs: [Pair; R]) {
        let bases = pairs.map(|p| p.base);
        let mut first = vnni_transform_sums::<R>(f, g, b, 0, &bases);
        let mut second = vnni_transform_sums::<R>(f, g, b, 1, &bases);
        let sums = vnni_transform_sums::<R>(f, g, b, 2, &bases);
        let last = vnni_transform_sums::<R>(f, g, b, 3, &bases);
        for r in 0..R {
            first[r] = _mm512_add_epi32(_mm512_add_epi32(first[r], second[r]), sums[r]);
            second[r] = _mm512_sub_epi32(_mm512_sub_epi32(second[r], sums[r]), last[r]);
        }
        let finish = VnniFinish::new(c, g, input_scale, out, b);
        for (p, (&first, &second)) in pairs.iter().zip(first.iter().zip(&second)) {
            finish.store(p.q, first);
            if p.two {
                finish.store(p.q + 1, second);
            }
        }
    }

    /// SSE2's copies of the steps before the tiles (its tiles are
    /// [`sse2_direct`] and [`sse2_rows`]), for x86_64's baseline level.
    pub(super) mod sse2 {
        use super::*;

        /// [`super::round_input`] in SSE2: the same integers.
        pub(in super::super) unsafe fn round_input(x: &[f32], q: f32, slack: usize, dst: &mut Vec<i16>) -> Option<f32> {
            let (scale, inv) = crate::int16::x86::sse2::input_step(x, q)?;
            let dst = crate::memory::scratch(dst, x.len() + slack);
            dst[x.len()..].fill(0);
            let (invv, qmax, qmin) = (_mm_set1_ps(inv), _mm_set1_ps(q), _mm_set1_ps(-q));
            // Clamped before the conversion (SSE2 has no 32-bit integer
            // minimum; `q` is whole, so the same integers); `cvtps2dq` rounds
            // to nearest, ties to even, as the tail.
            let round = |v: __m128| _mm_cvtps_epi32(_mm_max_ps(_mm_min_ps(_mm_mul_ps(v, invv), qmax), qmin));
            let whole = x.len() / 8 * 8;
            for i in (0..whole).step_by(8) {
                let lo = round(_mm_loadu_ps(x.as_ptr().add(i)));
                let hi = round(_mm_loadu_ps(x.as_ptr().add(i + 4)));
                _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, _mm_packs_epi32(lo, hi));
            }
            for i in whole..x.len() {
                dst[i] = ((x[i] * inv).round_ties_even() as i32).clamp(-(q as i32), q as i32) as i16;
            }
            Some(scale)
        }

        /// [`super::transform`] in SSE2: the same values.
        pub(in super::super) unsafe fn transform(xq: &[i16], g: &ConvGeometry, dst: &mut Vec<i16>) {
            transform_with::<Sse2>(xq, g, dst)
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

    /// Runs the layer on `level`; `None` when it declined. Checks that
    /// nothing was written past the output and its slack.
    fn run(conv: &Int16Conv, level: SimdLevel, g: &ConvGeometry, x: &[f32]) -> Option<Vec<f32>> {
        const GUARD: usize = 256;
        let (len, untouched) = (g.n * g.oh * g.ow * g.cout, f32::from_bits(0x7fc0_1234));
        let mut out = vec![MaybeUninit::new(untouched); len + NC + GUARD];
        let done = conv.forward(level, g, x, &mut out[..len + NC]);
        // SAFETY: every value was initialised above.
        let values: Vec<f32> = out.iter().map(|v| unsafe { v.assume_init() }).collect();
        assert!(values[len + NC..].iter().all(|v| v.to_bits() == untouched.to_bits()), "{level}: written past the output's slack");
        done.then(|| values[..len].to_vec())
    }

    /// The exact result in f64, and per output the most the two roundings
    /// can move it: half an input step times the weights' magnitudes plus
    /// half the channel's weight step (a whole one in the F(2, 3) form,
    /// whose rounding may move a weight to the farther integer) times the
    /// inputs' magnitudes (and their product), before PReLU (slopes are at
    /// most 1 here).
    fn reference(g: &ConvGeometry, w: &[f32], x: &[f32], bias: &[f32], slope: &[f32], conv: &Int16Conv) -> (Vec<f32>, Vec<f32>) {
        let xmax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let xstep = (xmax / conv.q) as f64;
        let (mut want, mut bound) = (Vec::new(), Vec::new());
        for img in 0..g.n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    for c in 0..g.cout {
                        let wstep = conv.scale[c] as f64 * if conv.winograd.is_some() { 2.0 } else { 1.0 };
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
    /// several images, a 1x1 kernel; in the F(2, 3) form (3x3, 16 channels
    /// or more), rows of odd and even width, an odd number of channels,
    /// fewer pairs than a tile, and blocks that spill.
    const SHAPES: [(usize, usize, usize, usize, usize, usize); 18] = [
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
        (2, 6, 9, 17, 6, 3),
        (1, 3, 4, 16, 17, 3),
        (3, 5, 6, 33, 40, 3),
        (1, 4, 3, 20, 16, 3),
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
        // kernel (AVX-512 VNNI, AVX-VNNI, AVX2, SSE2) answers the same, to the bit.
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
    fn the_rows_form_gives_the_direct_forms_values_to_the_bit() {
        // Same integer weights, same rounded input: the F(2, 3) form's sums
        // are exactly the direct form's, so every value is too.
        for &(n, h, w, cin, cout, k) in SHAPES.iter().filter(|s| s.5 == 3 && s.3 >= WINOGRAD_MIN_CIN) {
            let g = geometry(n, h, w, cin, cout, k);
            let (wv, x, bias, slope) = (values(k * k * cin * cout, 12), values(n * h * w * cin, 13), values(cout, 14), values(cout, 15));
            let conv = Int16Conv::new(&wv, k, cin, cout, &bias, Some(&slope)).unwrap();
            assert!(conv.winograd.is_some(), "{:?}: no F(2, 3) form", (n, h, w, cin, cout, k));
            let direct = Int16Conv { winograd: None, ..conv.clone() };
            for level in levels_here() {
                let (a, b) = (run(&conv, level, &g, &x).unwrap(), run(&direct, level, &g, &x).unwrap());
                let same = a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{level} {:?}: the forms differ", (n, h, w, cin, cout, k));
            }
        }
    }

    #[test]
    fn rounding_for_the_rows_form_makes_every_row_sum_even_at_least_cost() {
        // Values up to 1.3 times the range: some weights are clamped.
        let (cin, qw) = (40, 50);
        let exact: Vec<f32> = values(9 * cin, 16).iter().map(|v| v * 65.0).collect();
        let rounded: Vec<i32> = exact.iter().map(|v| v.round().clamp(-50.0, 50.0) as i32).collect();
        let mut ints = rounded.clone();
        even_rows(&mut ints, &exact, cin, qw);
        let (mut moved, mut clamped) = (0, 0);
        for ky in 0..3 {
            for ch in 0..cin {
                let at = [0, 1, 2].map(|kx| (ky * 3 + kx) * cin + ch);
                let sum = |v: &[i32]| at.iter().map(|&i| v[i]).sum::<i32>();
                assert_eq!(sum(&ints) % 2, 0, "row {ky} channel {ch}");
                let changed: Vec<usize> = at.into_iter().filter(|&i| ints[i] != rounded[i]).collect();
                assert_eq!(changed.len(), (sum(&rounded) % 2 != 0) as usize, "row {ky} channel {ch}: one weight moves, and only for an odd sum");
                if changed.is_empty() {
                    continue;
                }
                moved += 1;
                clamped += at.iter().any(|&i| rounded[i].abs() == qw) as usize;
                // No other move of one step within the range strays less
                // from the values.
                let error = |v: &[i32]| at.iter().map(|&i| (exact[i] - v[i] as f32).abs()).sum::<f32>();
                for i in at {
                    for step in [-1, 1] {
                        let mut other = rounded.clone();
                        other[i] += step;
                        if other[i].abs() <= qw {
                            assert!(error(&ints) <= error(&other) + 1e-4, "row {ky} channel {ch}: weight {i} by {step} strays less");
                        }
                    }
                }
                assert!(ints.iter().all(|v| v.abs() <= qw));
            }
        }
        assert!(moved > 10 && clamped > 0, "{moved} rows moved, {clamped} with a clamped weight: the test proves too little");
    }

    #[test]
    fn the_largest_transforms_cannot_wrap() {
        // Transformed inputs and weights at the most their integers allow:
        // neighbouring pixels of opposite signs at the largest magnitude
        // (`d2 - d1` is twice the input's largest integer), or all alike
        // (`d1 + d2`), against rows of equal weights (`(g0 + g1 + g2) / 2`
        // is 1.5 times the largest weight). With such rows in every channel
        // the integers are small (many terms); with one such row among tiny
        // weights, inputs and weights get their most steps, the caps
        // (`i16::MAX / 2` and `i16::MAX / 1.5`).
        for cin in [16, 64] {
            let (kk, cout) = (9 * cin, 16);
            let alternating: Vec<f32> = (0..kk * cout).map(|i| if (i / cout) % cin % 2 == 0 { 1.0 } else { -1.0 }).collect();
            let one_row: Vec<f32> = (0..kk * cout).map(|i| if (i / cout) / (3 * cin) == 1 && (i / cout) % cin == 0 { 1.0 } else { 1e-3 }).collect();
            let g = geometry(2, 5, 8, cin, cout, 3);
            let signs: Vec<f32> = (0..g.n * g.h * g.w * cin).map(|i| if (i / cin) % 2 == 0 { 4.0 } else { -4.0 }).collect();
            let alike = vec![4.0f32; g.n * g.h * g.w * cin];
            for (w, x) in [(&alternating, &signs), (&one_row, &alike), (&one_row, &signs)] {
                let conv = Int16Conv::new(w, 3, cin, cout, &[0.0; 16], None).unwrap();
                assert!(conv.winograd.is_some());
                let want = |img: usize, oy: usize, ox: usize| -> f64 {
                    let at = |ky: usize, j: usize| x[((img * g.h + oy + ky) * g.w + ox) * cin + j] as f64;
                    (0..3).flat_map(|ky| (0..3 * cin).map(move |j| (ky, j))).map(|(ky, j)| w[(ky * 3 * cin + j) * cout] as f64 * at(ky, j)).sum()
                };
                for level in levels_here() {
                    let got = run(&conv, level, &g, x).unwrap();
                    for (p, px) in got.chunks(cout).enumerate() {
                        let want = want(p / (g.oh * g.ow), p / g.ow % g.oh, p % g.ow) as f32;
                        // Rounding moves the tiny weights by up to a few
                        // percent; a wrapped sum would be off by about
                        // 2^32 steps.
                        assert!((px[0] - want).abs() <= 1e-2 * want.abs().max(1.0), "{level} cin {cin} pixel {p}: {} vs {want}", px[0]);
                    }
                }
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
        // x86_64's baseline has SSE2's kernel; aarch64 none.
        assert_eq!(int_kernel(SimdLevel::Baseline), cfg!(target_arch = "x86_64").then_some(IntKernel::Sse2));
        assert!(int_kernel(SimdLevel::Neon).is_none());
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn inputs_too_small_for_a_finite_step_round_to_zeros() {
        // `q / max` overflows f32: without the guard, the vector lanes
        // turned zeros and positive values into `-q`. SSE2's copy (every
        // x86_64 CPU) and AVX2's where the CPU has it.
        let avx2 = int_kernel(SimdLevel::Avx2Fma).is_some();
        for tiny in [1e-38f32, 1e-44, -3e-39] {
            let x: Vec<f32> = (0..37).map(|i| [0.0, tiny, -tiny][i % 3]).collect();
            for copy in ["SSE2", "AVX2"].into_iter().filter(|&c| c == "SSE2" || avx2) {
                let mut xq = Vec::new();
                // SAFETY: SSE2 is in every x86_64 CPU; AVX2 and FMA were
                // checked.
                let scale = unsafe {
                    match copy {
                        "SSE2" => x86::sse2::round_input(&x, 12_385.0, x86::SLACK, &mut xq),
                        _ => x86::round_input(&x, 12_385.0, x86::SLACK, &mut xq),
                    }
                };
                assert_eq!(scale, Some(1.0), "{copy} {tiny}");
                assert!(xq.iter().all(|&v| v == 0), "{copy} {tiny}: {xq:?}");
            }
        }
    }
}
