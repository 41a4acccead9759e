//! 1x1 convolutions as 16-bit integer products (x86_64: AVX-512 VNNI,
//! AVX-VNNI, AVX2 and SSE2).
//!
//! Every kernel multiplies pairs of 16-bit integers and adds both products
//! to a 32-bit lane: over 256 bits, 16 multiply-adds against an f32 FMA's 8.
//! - **AVX-512 VNNI** (`vpdpwssd`, the AVX-512 level): one instruction; a
//!   tile is 8 output channels by 24 pixels, 24 accumulators, which
//!   AVX-512's 32 vector registers hold with the inputs.
//! - **AVX2** (`vpmaddwd` then `vpaddd`, the AVX2 level): two instructions,
//!   on a core that issues two of each per cycle (Zen 4), and 16 registers:
//!   a tile is 4 channels by 16 pixels. A tile of 8 by 24, as for VNNI,
//!   spills its sums and is no faster than f32. On the AVX-512 level without
//!   VNNI, `vpmaddwd` would be no faster than AVX-512's f32 FMA, which keeps
//!   that path.
//! - **AVX-VNNI** (`vpdpwssd` on 256 bits, the AVX2+AVX-VNNI level): one
//!   instruction, no register for the product, so a tile is 6 channels by 16
//!   pixels, 12 sums, enough to cover the instruction's latency: with the
//!   AVX2 tile's 8 sums it waits (1.12–1.15x `vpmaddwd` + `vpaddd`, the
//!   `mac_rates` example), with 12 it ran 1.39x (an Intel Xeon). Its 6
//!   channels straddle the blocks of 8.
//! - **SSE2** (`pmaddwd` then `paddd` on 128 bits, x86_64's baseline level,
//!   what a CPU without AVX2 runs): the AVX2 kernel at half its width, 4
//!   channels by 8 pixels. Every x86_64 CPU has it; the f32 product there
//!   is `gemm`'s scalar kernel, which made MobileFaceNet 4.4x slower.
//!
//! [`Int16Weights`] holds a layer's weights rounded to integers with one
//! scale per output channel; [`Int16Weights::forward_into`] rounds the input
//! with one scale for the whole sample, multiplies in integers and turns the
//! sums back into f32 with the bias, PReLU and residual of
//! [`crate::pointwise`] applied on the way out. Every kernel computes the
//! same sums and the same f32 steps after them (a product, then a sum: no
//! FMA, which SSE2 lacks), so they give the same values, to the bit.
//!
//! Both roundings keep as many bits as the sums allow without overflow:
//! with `k` input channels every integer is at most
//! `q = sqrt(i32::MAX / k)` in magnitude (2047 for 512 channels, 5792 for
//! 64), so no 32-bit sum can wrap whatever the values (nor can `vpmaddwd`'s
//! pair of products, which wraps only for two products of -32768 squared).
//! The error of a product is then below `k / q` of its largest terms'
//! magnitude (about 1e-3 relative in practice); MobileFaceNet's answers on
//! lfw-dev do not change (see the model README).

// Only x86_64 has the kernels; elsewhere the weights are never built and
// `forward_into` always answers `false`.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use std::cell::RefCell;

use crate::simd::SimdLevel;

/// Input widths below this many pixels stay in f32 (padding the product to
/// whole vectors would cost more than it saves).
pub(crate) const MIN_PLANE: usize = 8;

/// Output channels per packed block of weights (a VNNI tile; an AVX2 tile
/// is half a block).
const ROWS: usize = 8;
/// Pixels per vector (32-bit lanes of a 256-bit register).
const LANES: usize = 8;

/// The largest integer magnitude `q` for which a sum of `terms` products
/// of two integers in `[-q, q]` always fits in an `i32` (and `q` in an
/// `i16`): `sqrt(i32::MAX / terms)`, at most `i16::MAX`. `terms` need not
/// be whole: [`crate::mtcnn`] passes a weight sum over its largest weight.
pub(crate) fn largest_int(terms: f64) -> f32 {
    (i32::MAX as f64 / terms.max(1.0)).sqrt().floor().min(i16::MAX as f64) as f32
}

/// An integer multiply-add instruction set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntKernel {
    /// AVX-512 VNNI `vpdpwssd`.
    Vnni,
    /// AVX-VNNI `vpdpwssd` on 256 bits.
    AvxVnni,
    /// AVX2 `vpmaddwd` then `vpaddd`.
    Madd,
    /// SSE2 `pmaddwd` then `paddd` on 128 bits: x86_64's baseline level,
    /// which every x86_64 CPU has.
    Sse2,
}

/// The integer kernel `level` runs on this CPU, if any: VNNI on the
/// AVX-512 level when the CPU has AVX-512 VNNI (without it, AVX-512's f32
/// FMA is as fast as `vpmaddwd`), AVX-VNNI on the AVX2+AVX-VNNI level,
/// `vpmaddwd` on the AVX2 level, SSE2's `pmaddwd` on x86_64's baseline;
/// none on aarch64.
/// Shared by MobileFaceNet's 1x1 layers and MTCNN's convolutions
/// ([`crate::mtcnn`]).
pub(crate) fn int_kernel(level: SimdLevel) -> Option<IntKernel> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma");
        match level {
            SimdLevel::Avx512 if avx2 && has!("avx512f") && has!("avx512vl") && has!("avx512vnni") => Some(IntKernel::Vnni),
            SimdLevel::Avx2Vnni if avx2 && has!("avxvnni") => Some(IntKernel::AvxVnni),
            SimdLevel::Avx2Fma if avx2 => Some(IntKernel::Madd),
            SimdLevel::Baseline => Some(IntKernel::Sse2),
            _ => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = level;
        None
    }
}

/// A 1x1 layer's weights as 16-bit integers, packed in blocks of `ROWS`
/// output channels for every kernel.
#[derive(Debug, Clone)]
pub(crate) struct Int16Weights {
    cout: usize,
    cin: usize,
    /// Input-channel pairs, `ceil(cin / 2)`.
    pairs: usize,
    /// Largest integer magnitude of a weight or an input value.
    q: f32,
    /// `[ceil(cout / ROWS)][pairs][ROWS]` words; each holds the weights of
    /// input channels `2j` (low half) and `2j + 1` (high half).
    packed: Vec<i32>,
    /// Per output channel: the weight one integer step stands for.
    scale: Vec<f32>,
}

/// What to add after the product: bias, optional PReLU slopes, optional
/// residual (`[cout][plane]`).
pub(crate) struct Epilogue<'a> {
    pub bias: &'a [f32],
    pub alpha: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
}

impl Int16Weights {
    /// Rounds a row-major `[cout][cin]` weight matrix. `None` when a weight
    /// is not finite (the f32 product then runs instead).
    pub(crate) fn new(weight: &[f32], cout: usize, cin: usize) -> Option<Self> {
        assert_eq!(weight.len(), cout * cin, "int16 weights: {cout}x{cin} needs {} values", cout * cin);
        if cin == 0 || cout == 0 || weight.iter().any(|w| !w.is_finite()) {
            return None;
        }
        let pairs = cin.div_ceil(2);
        let q = largest_int((2 * pairs) as f64);
        let blocks = cout.div_ceil(ROWS);
        let mut packed = vec![0i32; blocks * pairs * ROWS];
        let mut scale = vec![0f32; cout];
        for co in 0..cout {
            let row = &weight[co * cin..(co + 1) * cin];
            let max = row.iter().fold(0f32, |m, w| m.max(w.abs()));
            if max == 0.0 {
                continue;
            }
            scale[co] = max / q;
            let inv = q / max;
            let int = |ci: usize| -> i32 { row.get(ci).map_or(0, |w| (w * inv).round().clamp(-q, q) as i32) };
            let (block, r) = (co / ROWS, co % ROWS);
            for j in 0..pairs {
                let (lo, hi) = (int(2 * j), int(2 * j + 1));
                packed[(block * pairs + j) * ROWS + r] = (lo & 0xffff) | (hi << 16);
            }
        }
        Some(Self { cout, cin, pairs, q, packed, scale })
    }

    /// Whether the integer product runs on `level` here for a sample of
    /// `plane` pixels: a kernel for the level on this CPU (see
    /// [`int_kernel`]) and an input wide enough.
    pub(crate) fn runs_here(level: SimdLevel, plane: usize) -> bool {
        plane >= MIN_PLANE && int_kernel(level).is_some()
    }

    /// `out [cout][plane] = epilogue(W x)` for one sample `x [cin][plane]`,
    /// with `level`'s kernel. Returns `false`, writing nothing, when it
    /// cannot run here (see [`Int16Weights::runs_here`]) or `x` holds a value
    /// that is not finite.
    #[cfg(test)]
    pub(crate) fn forward(&self, level: SimdLevel, x: &[f32], plane: usize, out: &mut [f32], epilogue: &Epilogue) -> bool {
        assert_eq!(out.len(), self.cout * plane, "int16 product: output size");
        // SAFETY: `out` holds the `cout * plane` values written.
        unsafe { self.forward_into(level, x, plane, out.as_mut_ptr(), epilogue) }
    }

    /// [`Int16Weights::forward`] into memory that need not be initialised:
    /// when it returns `true` every one of the `cout * plane` values at
    /// `out` was written; when `false`, none was.
    ///
    /// # Safety
    /// `out` must be valid for writes of `cout * plane` `f32` values and
    /// overlap none of the inputs.
    pub(crate) unsafe fn forward_into(&self, level: SimdLevel, x: &[f32], plane: usize, out: *mut f32, epilogue: &Epilogue) -> bool {
        assert_eq!(x.len(), self.cin * plane, "int16 product: input size");
        assert_eq!(epilogue.bias.len(), self.cout, "int16 product: bias size");
        assert!(epilogue.alpha.is_none_or(|a| a.len() == self.cout), "int16 product: slopes size");
        assert!(epilogue.residual.is_none_or(|r| r.len() == self.cout * plane), "int16 product: residual size");
        #[cfg(target_arch = "x86_64")]
        {
            let Some(kernel) = int_kernel(level).filter(|_| plane >= MIN_PLANE) else { return false };
            // SAFETY: `int_kernel` checked the CPU's features for the
            // kernel (AVX2 and FMA for all but SSE2's, which every x86_64
            // CPU has); the caller vouches for `out`.
            match kernel {
                IntKernel::Vnni => x86::forward(self, x, plane, out, epilogue, x86::vnni::tiles),
                IntKernel::AvxVnni => x86::forward(self, x, plane, out, epilogue, x86::avxvnni::tiles),
                IntKernel::Madd => x86::forward(self, x, plane, out, epilogue, x86::madd::tiles),
                IntKernel::Sse2 => x86::sse2::forward(self, x, plane, out, epilogue),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (level, out);
            false
        }
    }
}

thread_local! {
    /// The packed input of the current product, reused between calls so
    /// that a large sample does not map fresh pages every layer.
    static PACKED_INPUT: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// One kernel's tiles over a pixel range: `tiles(w, xp, plane,
    /// input_scale, out, epilogue, p0, p1)` writes pixels `[p0, p1)` (both
    /// multiples of `LANES`) of every output channel.
    pub(super) type Tiles = unsafe fn(&Int16Weights, &[i32], usize, f32, *mut f32, &Epilogue, usize, usize);

    /// The value one integer step of `x` stands for when its largest
    /// magnitude is rounded to `q`, and its inverse: `(scale, inv)`.
    /// `(1, 0)` (all zeros) when every value is zero or so small that the
    /// inverse is not finite; `None` when a value is not finite. Both
    /// integer layers (here and in [`crate::mtcnn`]) round their input with
    /// it.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn input_step(x: &[f32], q: f32) -> Option<(f32, f32)> {
        // A magnitude's bits (the sign bit cleared) order as its value does
        // when read as an integer, and infinities and NaNs come above every
        // finite value: one integer maximum finds the largest magnitude and
        // any value that is not finite (two instructions a vector, where a
        // float maximum and a NaN test took four).
        let abs_mask = _mm256_set1_epi32(i32::MAX);
        // Four running maxima: one would wait on the maximum's latency every
        // vector instead of issuing the next.
        const WAYS: usize = 4;
        let mut max4 = [_mm256_setzero_si256(); WAYS];
        let mut blocks = x.chunks_exact(WAYS * LANES);
        for b in &mut blocks {
            for (w, m) in max4.iter_mut().enumerate() {
                let v = _mm256_loadu_si256(b.as_ptr().add(w * LANES) as *const __m256i);
                *m = _mm256_max_epi32(*m, _mm256_and_si256(v, abs_mask));
            }
        }
        let mut maxv = _mm256_max_epi32(_mm256_max_epi32(max4[0], max4[1]), _mm256_max_epi32(max4[2], max4[3]));
        let mut chunks = blocks.remainder().chunks_exact(LANES);
        for c in &mut chunks {
            maxv = _mm256_max_epi32(maxv, _mm256_and_si256(_mm256_loadu_si256(c.as_ptr() as *const __m256i), abs_mask));
        }
        let mut lanes = [0i32; LANES];
        _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, maxv);
        step_of(&lanes, chunks.remainder(), q)
    }

    /// The end of both copies of [`input_step`]: the largest magnitude among
    /// the vector maxima's bits `lanes` and the values `rest`, then the step
    /// and its inverse.
    #[inline(always)]
    fn step_of(lanes: &[i32], rest: &[f32], q: f32) -> Option<(f32, f32)> {
        let bits = lanes.iter().copied().chain(rest.iter().map(|v| (v.to_bits() & i32::MAX as u32) as i32)).fold(0, i32::max);
        let max = f32::from_bits(bits as u32);
        if !max.is_finite() {
            return None;
        }
        Some(if max == 0.0 || !(q / max).is_finite() { (1.0, 0.0) } else { (max / q, q / max) })
    }

    /// Rounds `x` into `[padded / LANES][pairs][LANES]` words: blocks of
    /// `LANES` pixels, each with all its channel pairs (channels `2j`, `2j + 1`
    /// in the low and high halves; zeros past `plane` and past `cin`), so
    /// that a tile reads its inputs in order. Returns the input scale, or
    /// `None` when a value is not finite.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pack_input(w: &Int16Weights, x: &[f32], plane: usize, padded: usize, dst: &mut Vec<i32>) -> Option<f32> {
        let (scale, inv) = input_step(x, w.q)?;
        // Every word is written below (the padding with zeros).
        let dst = crate::memory::scratch(dst, w.pairs * padded);
        let (invv, lo_mask) = (_mm256_set1_ps(inv), _mm256_set1_epi32(0xffff));
        let (qmax, qmin) = (_mm256_set1_epi32(w.q as i32), _mm256_set1_epi32(-(w.q as i32)));
        let round = |v: __m256| _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v, invv)), qmax), qmin);
        let pk = Packing::new(w, x, plane);
        for g in (0..pk.whole).step_by(pk.group) {
            for j in 0..w.pairs {
                let (a, b) = pk.pair(j);
                for p in (g..(g + pk.group).min(pk.whole)).step_by(LANES) {
                    let lo = round(_mm256_loadu_ps(a.as_ptr().add(p)));
                    let hi = round(_mm256_loadu_ps(b.as_ptr().add(p)));
                    let word = _mm256_or_si256(_mm256_and_si256(lo, lo_mask), _mm256_slli_epi32(hi, 16));
                    _mm256_storeu_si256(dst.as_mut_ptr().add(pk.at(p, j)) as *mut __m256i, word);
                }
            }
        }
        pk.tail(inv, dst);
        Some(scale)
    }

    /// What both copies of `pack_input` share: where each pixel's words go,
    /// the channels of each pair, and the last partial block of pixels.
    struct Packing<'a> {
        w: &'a Int16Weights,
        x: &'a [f32],
        plane: usize,
        /// The partner of an odd layer's last channel.
        zeros: Vec<f32>,
        /// Pixels in whole blocks of `LANES`.
        whole: usize,
        /// Pixels per group of blocks, all pairs of a group before the next:
        /// the group's words (16 KB at most) stay in L1 until every pair has
        /// written its part of them.
        group: usize,
    }

    impl<'a> Packing<'a> {
        fn new(w: &'a Int16Weights, x: &'a [f32], plane: usize) -> Self {
            let zeros = if w.cin % 2 == 1 { vec![0f32; plane] } else { Vec::new() };
            Self { w, x, plane, zeros, whole: plane / LANES * LANES, group: (512 / w.pairs).max(1) * LANES }
        }

        /// Pair `j`'s two channels (the second all zeros past `cin`).
        #[inline(always)]
        fn pair(&self, j: usize) -> (&[f32], &[f32]) {
            let (x, plane) = (self.x, self.plane);
            let b = if 2 * j + 1 < self.w.cin { &x[(2 * j + 1) * plane..(2 * j + 2) * plane] } else { &self.zeros[..] };
            (&x[2 * j * plane..(2 * j + 1) * plane], b)
        }

        /// Where pixel `p`'s block holds pair `j`'s words.
        #[inline(always)]
        fn at(&self, p: usize, j: usize) -> usize {
            (p / LANES * self.w.pairs + j) * LANES
        }

        /// The last, partial block of pixels (zeros past the plane), one
        /// value at a time; `inv` is the input's inverse step.
        fn tail(&self, inv: f32, dst: &mut [i32]) {
            if self.whole == self.plane {
                return;
            }
            let q = self.w.q as i32;
            let int = |v: f32| ((v * inv).round() as i32).clamp(-q, q);
            for j in 0..self.w.pairs {
                let (a, b) = self.pair(j);
                let at = self.at(self.whole, j);
                for (l, word) in dst[at..at + LANES].iter_mut().enumerate() {
                    let p = self.whole + l;
                    *word = if p < self.plane { (int(a[p]) & 0xffff) | (int(b[p]) << 16) } else { 0 };
                }
            }
        }
    }

    /// Raw output pointer handed to rayon's workers, which write disjoint
    /// pixel ranges.
    struct OutPtr(*mut f32);
    unsafe impl Send for OutPtr {}
    unsafe impl Sync for OutPtr {}

    /// Rounds a sample's input for the tiles (`pack_input` and its SSE2
    /// twin): `(w, x, plane, padded, dst)`, the input scale or `None`.
    pub(super) type Pack = unsafe fn(&Int16Weights, &[f32], usize, usize, &mut Vec<i32>) -> Option<f32>;

    /// See [`Int16Weights::forward`]: rounds the input with AVX2, then runs
    /// `tiles` over the plane.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA, and whatever `tiles` needs; `out` as
    /// for [`Int16Weights::forward_into`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward(w: &Int16Weights, x: &[f32], plane: usize, out: *mut f32, e: &Epilogue, tiles: Tiles) -> bool {
        forward_with(w, x, plane, out, e, pack_input, tiles)
    }

    /// [`forward`]'s steps with any `pack` and `tiles`: rounds the input,
    /// then runs `tiles` over the plane, split across rayon's threads.
    ///
    /// # Safety
    /// The CPU must have what `pack` and `tiles` need; `out` as for
    /// [`Int16Weights::forward_into`].
    #[inline(always)]
    pub(super) unsafe fn forward_with(w: &Int16Weights, x: &[f32], plane: usize, out: *mut f32, e: &Epilogue, pack: Pack, tiles: Tiles) -> bool {
        let padded = plane.div_ceil(LANES) * LANES;
        // Taken out of the cell for the call: a rayon worker waiting in the
        // parallel loop below may run another product on this thread.
        let mut xp = PACKED_INPUT.with(|cell| cell.take());
        let done = match pack(w, x, plane, padded, &mut xp) {
            None => false,
            Some(input_scale) => {
                let xp = &xp[..w.pairs * padded];
                let threads = rayon::current_num_threads();
                // Tiles of 3 vectors; at least 4 of them per thread.
                let span = 3 * LANES;
                let spans = padded.div_ceil(span);
                if threads > 1 && spans >= 8 {
                    use rayon::prelude::*;
                    let per = spans.div_ceil(threads).max(4) * span;
                    let dst = OutPtr(out);
                    (0..padded).step_by(per).collect::<Vec<_>>().into_par_iter().for_each(|p0| {
                        let dst = &dst;
                        // SAFETY: the features were checked by the caller; each task writes
                        // only the pixels of its own range, in bounds of `out`.
                        unsafe { tiles(w, xp, plane, input_scale, dst.0, e, p0, (p0 + per).min(padded)) }
                    });
                } else {
                    tiles(w, xp, plane, input_scale, out, e, 0, padded);
                }
                true
            }
        };
        PACKED_INPUT.with(|cell| cell.replace(xp));
        done
    }

    /// The sums of one tile: `R` output channels by `NV * LANES` pixels,
    /// over all input pairs. `w`: the first of the tile's channels in a
    /// block's `[pairs][ROWS]` words; `x`: the tile's first block of pixels
    /// in the packed input, blocks `stride` words apart; `madd(sum, w, x)`
    /// adds the products of `w`'s and `x`'s 16-bit pairs to `sum`.
    #[inline(always)]
    unsafe fn tile<const R: usize, const NV: usize>(
        w: *const i32,
        x: *const i32,
        stride: usize,
        pairs: usize,
        madd: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
    ) -> [[__m256i; NV]; R] {
        let mut acc = [[_mm256_setzero_si256(); NV]; R];
        for j in 0..pairs {
            let xs: [__m256i; NV] = std::array::from_fn(|v| _mm256_loadu_si256(x.add(v * stride + j * LANES) as *const __m256i));
            for (r, row) in acc.iter_mut().enumerate() {
                let wv = _mm256_set1_epi32(*w.add(j * ROWS + r));
                for (a, xv) in row.iter_mut().zip(&xs) {
                    *a = madd(*a, wv, *xv);
                }
            }
        }
        acc
    }

    /// Turns one tile's sums, channels from `row0` on, back into f32:
    /// `put(t, slope, at, inside)` gets `t = sum * scales + bias` for the
    /// pixels at `out[at..]`, of which the first `inside` (1 to `LANES`) lie in
    /// the plane, and the channel's PReLU slope, and applies the rest of the
    /// epilogue and stores them.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn finish<const R: usize, const NV: usize>(
        acc: &[[__m256i; NV]; R],
        w: &Int16Weights,
        row0: usize,
        p0: usize,
        plane: usize,
        input_scale: f32,
        e: &Epilogue,
        put: impl Fn(__m256, Option<__m256>, usize, usize),
    ) {
        for (r, row) in acc.iter().enumerate() {
            let co = row0 + r;
            if co >= w.cout {
                break;
            }
            let s = _mm256_set1_ps(input_scale * *w.scale.get_unchecked(co));
            let b = _mm256_set1_ps(*e.bias.get_unchecked(co));
            let al = e.alpha.map(|a| _mm256_set1_ps(*a.get_unchecked(co)));
            for (v, a) in row.iter().enumerate() {
                let p = p0 + v * LANES;
                if p >= plane {
                    break;
                }
                // A product and a sum, not one FMA: SSE2 (below) has none,
                // and every kernel gives the same values.
                put(_mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(*a), s), b), al, co * plane + p, (plane - p).min(LANES));
            }
        }
    }

    /// AVX-512 VNNI: `vpdpwssd`, tiles of all `ROWS` channels of a block by
    /// up to 3 vectors of pixels (24 sums in AVX-512's 32 registers), the
    /// plane's last vector stored under a mask.
    pub(super) mod vnni {
        use super::*;

        /// Every tile of the pixel range `[p0, p1)` (both multiples of
        /// `LANES`).
        ///
        /// # Safety
        /// The CPU must have AVX-512 VNNI and VL; `out` as for
        /// [`Int16Weights::forward_into`].
        #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
        #[allow(clippy::too_many_arguments)]
        pub(in super::super) unsafe fn tiles(w: &Int16Weights, xp: &[i32], plane: usize, input_scale: f32, out: *mut f32, e: &Epilogue, p0: usize, p1: usize) {
            let zero = _mm256_setzero_ps();
            let put = |mut t: __m256, al: Option<__m256>, at: usize, inside: usize| {
                let mask: __mmask8 = if inside == LANES { 0xff } else { (1u8 << inside) - 1 };
                if let Some(al) = al {
                    // PReLU: `t < 0 ? slope * t : t`.
                    t = _mm256_mask_mul_ps(t, _mm256_cmp_ps_mask::<_CMP_LT_OQ>(t, zero), t, al);
                }
                if let Some(res) = e.residual {
                    t = _mm256_add_ps(t, _mm256_maskz_loadu_ps(mask, res.as_ptr().add(at)));
                }
                _mm256_mask_storeu_ps(out.add(at), mask, t);
            };
            let blocks = w.cout.div_ceil(ROWS);
            let mut p = p0;
            macro_rules! run {
                ($nv:literal) => {
                    while p + $nv * LANES <= p1 {
                        for block in 0..blocks {
                            let wp = w.packed.as_ptr().add(block * w.pairs * ROWS);
                            let acc = tile::<ROWS, $nv>(wp, xp.as_ptr().add(p * w.pairs), w.pairs * LANES, w.pairs, |a, w, x| {
                                _mm256_dpwssd_epi32(a, w, x)
                            });
                            finish(&acc, w, block * ROWS, p, plane, input_scale, e, put);
                        }
                        p += $nv * LANES;
                    }
                };
            }
            run!(3);
            run!(2);
            run!(1);
        }
    }

    /// `acc + ` the products of `a`'s and `b`'s 16-bit pairs, summed per
    /// 32-bit lane: AVX-VNNI's `vpdpwssd` on 256 bits, written out because
    /// LLVM splits the intrinsic back into `vpmaddwd` and `vpaddd` where it
    /// judges that shortens a chain of sums (most of MTCNN's tile, which
    /// then ran no faster than AVX2's).
    ///
    /// # Safety
    /// The CPU must have AVX-VNNI.
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    pub(crate) unsafe fn dpwssd_avx(mut acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        std::arch::asm!("{{vex}} vpdpwssd {acc}, {a}, {b}", acc = inout(ymm_reg) acc, a = in(ymm_reg) a, b = in(ymm_reg) b, options(pure, nomem, nostack, preserves_flags));
        acc
    }

    /// Finishes and stores 8 values for the 256-bit kernels: `t` (`sum *
    /// scale + bias`) through the PReLU of slope `al` if any, plus the
    /// residual if any, to `out[at..]`, of which the first `inside` (1 to
    /// `LANES`) lie in the plane (a partial vector goes through a buffer).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `out` and the residual hold `at +
    /// inside` values.
    #[inline(always)]
    unsafe fn put(out: *mut f32, e: &Epilogue, mut t: __m256, al: Option<__m256>, at: usize, inside: usize) {
        if let Some(al) = al {
            // PReLU: `t < 0 ? slope * t : t`.
            t = _mm256_blendv_ps(t, _mm256_mul_ps(t, al), _mm256_cmp_ps::<_CMP_LT_OQ>(t, _mm256_setzero_ps()));
        }
        if inside == LANES {
            if let Some(res) = e.residual {
                t = _mm256_add_ps(t, _mm256_loadu_ps(res.as_ptr().add(at)));
            }
            _mm256_storeu_ps(out.add(at), t);
        } else {
            let mut lanes = [0f32; LANES];
            _mm256_storeu_ps(lanes.as_mut_ptr(), t);
            for (l, &v) in lanes.iter().enumerate().take(inside) {
                // No `+ 0.0` without a residual: it would turn a -0.0 into +0.0.
                *out.add(at + l) = match e.residual {
                    Some(res) => v + *res.get_unchecked(at + l),
                    None => v,
                };
            }
        }
    }

    /// AVX-VNNI: `vpdpwssd` on 256 bits, tiles of 6 channels by up to 2
    /// vectors of pixels (12 sums; the instruction needs no register for
    /// the product). The 6 channels are read through one pointer each, as
    /// they straddle the packed blocks of `ROWS`; a layer's last 6 channels
    /// are one tile even where that repeats some (same values). Same sums
    /// and f32 steps as the other kernels, so the same values.
    pub(super) mod avxvnni {
        use super::*;

        /// Output channels per tile.
        const CHANNELS: usize = 6;

        /// The sums of one tile: [`CHANNELS`] output channels whose weights
        /// start at `rows` (each channel's word of pair `j` at `j * ROWS`),
        /// by `NV * LANES` pixels; `x` as for [`tile`].
        #[inline(always)]
        unsafe fn tile<const NV: usize>(rows: [*const i32; CHANNELS], x: *const i32, stride: usize, pairs: usize) -> [[__m256i; NV]; CHANNELS] {
            let mut acc = [[_mm256_setzero_si256(); NV]; CHANNELS];
            for j in 0..pairs {
                let xs: [__m256i; NV] = std::array::from_fn(|v| _mm256_loadu_si256(x.add(v * stride + j * LANES) as *const __m256i));
                for (row, &wr) in acc.iter_mut().zip(&rows) {
                    let wv = _mm256_set1_epi32(*wr.add(j * ROWS));
                    for (a, xv) in row.iter_mut().zip(&xs) {
                        *a = dpwssd_avx(*a, wv, *xv);
                    }
                }
            }
            acc
        }

        /// Every tile of the pixel range `[p0, p1)` (both multiples of
        /// `LANES`).
        ///
        /// # Safety
        /// The CPU must have AVX2, FMA and AVX-VNNI; `out` as for
        /// [`Int16Weights::forward_into`].
        #[target_feature(enable = "avx2,fma,avxvnni")]
        #[allow(clippy::too_many_arguments)]
        pub(in super::super) unsafe fn tiles(w: &Int16Weights, xp: &[i32], plane: usize, input_scale: f32, out: *mut f32, e: &Epilogue, p0: usize, p1: usize) {
            if w.cout < CHANNELS {
                return super::madd::tiles(w, xp, plane, input_scale, out, e, p0, p1);
            }
            let put = |t: __m256, al: Option<__m256>, at: usize, inside: usize| put(out, e, t, al, at, inside);
            // First channels of the tiles: steps of CHANNELS, the last tile
            // ending at the last channel.
            let firsts = (0..w.cout - CHANNELS).step_by(CHANNELS).chain([w.cout - CHANNELS]);
            let rows = |c0: usize| -> [*const i32; CHANNELS] {
                std::array::from_fn(|r| {
                    let c = c0 + r;
                    w.packed.as_ptr().add(c / ROWS * w.pairs * ROWS + c % ROWS)
                })
            };
            let mut p = p0;
            macro_rules! run {
                ($nv:literal) => {
                    while p + $nv * LANES <= p1 {
                        for c0 in firsts.clone() {
                            let acc = tile::<$nv>(rows(c0), xp.as_ptr().add(p * w.pairs), w.pairs * LANES, w.pairs);
                            finish(&acc, w, c0, p, plane, input_scale, e, put);
                        }
                        p += $nv * LANES;
                    }
                };
            }
            run!(2);
            run!(1);
        }
    }

    /// AVX2: `vpmaddwd` (the same pairs of 16-bit multiplies, summed into
    /// 32 bits) and a separate `vpaddd`. With 16 registers a tile is half a
    /// block, `HALF` channels, by up to 2 vectors of pixels: 8 sums, the
    /// inputs, a weight and a product. The plane's last partial vector goes
    /// through a buffer. The sums and the f32 arithmetic after them are the
    /// VNNI kernel's, so both give the same values.
    pub(super) mod madd {
        use super::*;

        /// Output channels per AVX2 tile.
        const HALF: usize = ROWS / 2;

        /// Every tile of the pixel range `[p0, p1)` (both multiples of
        /// `LANES`).
        ///
        /// # Safety
        /// The CPU must have AVX2 and FMA; `out` as for
        /// [`Int16Weights::forward_into`].
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        pub(in super::super) unsafe fn tiles(w: &Int16Weights, xp: &[i32], plane: usize, input_scale: f32, out: *mut f32, e: &Epilogue, p0: usize, p1: usize) {
            let put = |t: __m256, al: Option<__m256>, at: usize, inside: usize| put(out, e, t, al, at, inside);
            let halves = w.cout.div_ceil(HALF);
            let mut p = p0;
            macro_rules! run {
                ($nv:literal) => {
                    while p + $nv * LANES <= p1 {
                        for h in 0..halves {
                            // Channels [h * HALF, h * HALF + HALF): half h % 2 of block h / 2.
                            let wp = w.packed.as_ptr().add(h / 2 * w.pairs * ROWS + h % 2 * HALF);
                            let acc = tile::<HALF, $nv>(wp, xp.as_ptr().add(p * w.pairs), w.pairs * LANES, w.pairs, |a, w, x| {
                                _mm256_add_epi32(a, _mm256_madd_epi16(w, x))
                            });
                            finish(&acc, w, h * HALF, p, plane, input_scale, e, put);
                        }
                        p += $nv * LANES;
                    }
                };
            }
            run!(2);
            run!(1);
        }
    }

    /// x86_64's baseline, SSE2 (every x86_64 CPU has it: no detection):
    /// `pmaddwd` and `paddd` on 128 bits, the AVX2 kernel at half its width,
    /// for CPUs without AVX2. The same packed input and weights (a block of
    /// [`LANES`] pixels is two registers), the same sums and the same f32
    /// steps after them, so the same values as the other kernels. (Tiles of
    /// 2 channels by 2 blocks, fewer shuffles of the weights, ran 0–4 %
    /// faster: not kept.)
    pub(crate) mod sse2 {
        use super::*;

        /// Output channels per tile; a tile is one block of pixels (two
        /// registers): 8 sums, the inputs, a weight and a product in SSE2's
        /// 16 registers.
        const CHANNELS: usize = ROWS / 2;

        /// `a` where `mask`'s lanes are set, `b` elsewhere (SSE2 has no
        /// blend).
        #[inline(always)]
        unsafe fn select(mask: __m128i, a: __m128i, b: __m128i) -> __m128i {
            _mm_or_si128(_mm_and_si128(mask, a), _mm_andnot_si128(mask, b))
        }

        /// [`super::input_step`] in SSE2.
        pub(crate) unsafe fn input_step(x: &[f32], q: f32) -> Option<(f32, f32)> {
            // As in the AVX2 copy: magnitudes' bits compared as integers
            // (SSE2's signed compare suffices, the sign bit being clear).
            let abs_mask = _mm_set1_epi32(i32::MAX);
            let max = |m: __m128i, v: __m128i| select(_mm_cmpgt_epi32(v, m), v, m);
            const WAYS: usize = 4;
            const L: usize = 4;
            let mut max4 = [_mm_setzero_si128(); WAYS];
            let mut blocks = x.chunks_exact(WAYS * L);
            for b in &mut blocks {
                for (w, m) in max4.iter_mut().enumerate() {
                    *m = max(*m, _mm_and_si128(_mm_loadu_si128(b.as_ptr().add(w * L) as *const __m128i), abs_mask));
                }
            }
            let mut maxv = max(max(max4[0], max4[1]), max(max4[2], max4[3]));
            let mut chunks = blocks.remainder().chunks_exact(L);
            for c in &mut chunks {
                maxv = max(maxv, _mm_and_si128(_mm_loadu_si128(c.as_ptr() as *const __m128i), abs_mask));
            }
            let mut lanes = [0i32; L];
            _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, maxv);
            step_of(&lanes, chunks.remainder(), q)
        }

        /// [`super::pack_input`] in SSE2: the same words.
        unsafe fn pack_input(w: &Int16Weights, x: &[f32], plane: usize, padded: usize, dst: &mut Vec<i32>) -> Option<f32> {
            let (scale, inv) = input_step(x, w.q)?;
            // Every word is written below (the padding with zeros).
            let dst = crate::memory::scratch(dst, w.pairs * padded);
            let (invv, lo_mask) = (_mm_set1_ps(inv), _mm_set1_epi32(0xffff));
            let (qmax, qmin) = (_mm_set1_ps(w.q), _mm_set1_ps(-w.q));
            // Clamped before the conversion (SSE2 has no 32-bit integer
            // minimum): `q` is whole, so the same integers as AVX2's clamp
            // after it.
            let round = |v: __m128| _mm_cvtps_epi32(_mm_max_ps(_mm_min_ps(_mm_mul_ps(v, invv), qmax), qmin));
            let pk = Packing::new(w, x, plane);
            for g in (0..pk.whole).step_by(pk.group) {
                for j in 0..w.pairs {
                    let (a, b) = pk.pair(j);
                    for p in (g..(g + pk.group).min(pk.whole)).step_by(4) {
                        let lo = round(_mm_loadu_ps(a.as_ptr().add(p)));
                        let hi = round(_mm_loadu_ps(b.as_ptr().add(p)));
                        let word = _mm_or_si128(_mm_and_si128(lo, lo_mask), _mm_slli_epi32(hi, 16));
                        _mm_storeu_si128(dst.as_mut_ptr().add(pk.at(p, j) + p % LANES) as *mut __m128i, word);
                    }
                }
            }
            pk.tail(inv, dst);
            Some(scale)
        }

        /// [`Int16Weights::forward`] on SSE2.
        ///
        /// # Safety
        /// `out` as for [`Int16Weights::forward_into`].
        pub(in super::super) unsafe fn forward(w: &Int16Weights, x: &[f32], plane: usize, out: *mut f32, e: &Epilogue) -> bool {
            forward_with(w, x, plane, out, e, pack_input, tiles)
        }

        /// Finishes and stores 4 values: [`super::put`] in SSE2.
        #[inline(always)]
        unsafe fn put(out: *mut f32, e: &Epilogue, mut t: __m128, al: Option<__m128>, at: usize, inside: usize) {
            if let Some(al) = al {
                // PReLU: `t < 0 ? slope * t : t`.
                let neg = _mm_cmplt_ps(t, _mm_setzero_ps());
                t = _mm_or_ps(_mm_and_ps(neg, _mm_mul_ps(t, al)), _mm_andnot_ps(neg, t));
            }
            if inside >= 4 {
                if let Some(res) = e.residual {
                    t = _mm_add_ps(t, _mm_loadu_ps(res.as_ptr().add(at)));
                }
                _mm_storeu_ps(out.add(at), t);
            } else {
                let mut lanes = [0f32; 4];
                _mm_storeu_ps(lanes.as_mut_ptr(), t);
                for (l, &v) in lanes.iter().enumerate().take(inside) {
                    // No `+ 0.0` without a residual: it would turn a -0.0 into +0.0.
                    *out.add(at + l) = match e.residual {
                        Some(res) => v + *res.get_unchecked(at + l),
                        None => v,
                    };
                }
            }
        }

        /// Every tile of the pixel range `[p0, p1)` (both multiples of
        /// `LANES`).
        ///
        /// # Safety
        /// `out` as for [`Int16Weights::forward_into`].
        #[allow(clippy::too_many_arguments)]
        unsafe fn tiles(w: &Int16Weights, xp: &[i32], plane: usize, input_scale: f32, out: *mut f32, e: &Epilogue, p0: usize, p1: usize) {
            for p in (p0..p1).step_by(LANES) {
                let x = xp.as_ptr().add(p * w.pairs);
                for c0 in (0..w.cout).step_by(CHANNELS) {
                    // Channels [c0, c0 + CHANNELS): half c0 % ROWS / CHANNELS of block c0 / ROWS.
                    let wp = w.packed.as_ptr().add(c0 / ROWS * w.pairs * ROWS + c0 % ROWS);
                    let mut acc = [[_mm_setzero_si128(); 2]; CHANNELS];
                    for j in 0..w.pairs {
                        let xs = [_mm_loadu_si128(x.add(j * LANES) as *const __m128i), _mm_loadu_si128(x.add(j * LANES + 4) as *const __m128i)];
                        let ws = _mm_loadu_si128(wp.add(j * ROWS) as *const __m128i);
                        macro_rules! row {
                            ($r:literal, $imm:literal) => {
                                let wv = _mm_shuffle_epi32::<$imm>(ws);
                                acc[$r][0] = _mm_add_epi32(acc[$r][0], _mm_madd_epi16(wv, xs[0]));
                                acc[$r][1] = _mm_add_epi32(acc[$r][1], _mm_madd_epi16(wv, xs[1]));
                            };
                        }
                        row!(0, 0x00);
                        row!(1, 0x55);
                        row!(2, 0xaa);
                        row!(3, 0xff);
                    }
                    for (r, sums) in acc.iter().enumerate() {
                        let co = c0 + r;
                        if co >= w.cout {
                            break;
                        }
                        let s = _mm_set1_ps(input_scale * *w.scale.get_unchecked(co));
                        let b = _mm_set1_ps(*e.bias.get_unchecked(co));
                        let al = e.alpha.map(|a| _mm_set1_ps(*a.get_unchecked(co)));
                        for (h, sum) in sums.iter().enumerate() {
                            let q = p + h * 4;
                            if q >= plane {
                                break;
                            }
                            put(out, e, _mm_add_ps(_mm_mul_ps(_mm_cvtepi32_ps(*sum), s), b), al, co * plane + q, plane - q);
                        }
                    }
                }
            }
        }
    }
}


/// Helpers shared by the integer kernels' tests (here and in
/// [`crate::mtcnn`]).
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Deterministic, signed, uneven values in [-1, 1].
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503)) >> 8;
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// The levels with an integer kernel on this CPU (says so when none).
    pub(crate) fn levels_here() -> Vec<SimdLevel> {
        let levels: Vec<_> = SimdLevel::ALL.into_iter().filter(|l| l.is_supported() && int_kernel(*l).is_some()).collect();
        if levels.is_empty() {
            eprintln!("no integer kernel on this CPU (x86_64): the integer kernels are not used here");
        }
        levels
    }

    /// [`levels_here`] when it holds two kernels to compare; empty (and
    /// says so) otherwise.
    pub(crate) fn levels_to_compare() -> Vec<SimdLevel> {
        let levels = levels_here();
        if levels.len() < 2 {
            eprintln!("only {levels:?} has an integer kernel here: nothing to compare");
            return Vec::new();
        }
        levels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 reference: `epilogue(W x)`.
    fn reference(w: &[f32], x: &[f32], cout: usize, cin: usize, plane: usize, e: &Epilogue) -> Vec<f32> {
        let mut y = vec![0f32; cout * plane];
        for co in 0..cout {
            for p in 0..plane {
                let mut s = e.bias[co] as f64;
                for ci in 0..cin {
                    s += w[co * cin + ci] as f64 * x[ci * plane + p] as f64;
                }
                let mut t = s as f32;
                if let Some(a) = e.alpha {
                    t = if t < 0.0 { a[co] * t } else { t };
                }
                y[co * plane + p] = t + e.residual.map_or(0.0, |r| r[co * plane + p]);
            }
        }
        y
    }

    use test_support::{levels_here, values};

    /// (cout, cin, plane): odd channels, tiles that do not divide the plane
    /// or the channels, MobileFaceNet's real shapes.
    const SHAPES: [(usize, usize, usize); 9] =
        [(5, 3, 9), (7, 27, 3136), (64, 64, 3136), (128, 64, 784), (64, 128, 784), (512, 128, 49), (13, 513, 100), (4, 1, 8), (6, 10, 23)];

    #[test]
    fn matches_the_f32_product_on_awkward_shapes() {
        for level in levels_here() {
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                for &(cout, cin, plane) in &SHAPES {
                    let w = values(cout * cin, 1);
                    let x = values(cin * plane, 2);
                    let bias = values(cout, 3);
                    let alpha = values(cout, 4);
                    let res = values(cout * plane, 5);
                    for (alpha, residual) in [(None, None), (Some(&alpha[..]), None), (Some(&alpha[..]), Some(&res[..]))] {
                        let e = Epilogue { bias: &bias, alpha, residual };
                        let want = reference(&w, &x, cout, cin, plane, &e);
                        let q = Int16Weights::new(&w, cout, cin).unwrap();
                        // A guard region after the output: nothing may be written there.
                        const GUARD: usize = 16;
                        let mut buf = vec![f32::NAN; cout * plane + GUARD];
                        // SAFETY: `buf` holds the output and more.
                        assert!(pool.install(|| unsafe { q.forward_into(level, &x, plane, buf.as_mut_ptr(), &e) }));
                        assert!(buf[cout * plane..].iter().all(|v| v.is_nan()), "{level} {cout}x{cin}x{plane}: written past the output");
                        let got = &buf[..cout * plane];
                        // Error bound: each term rounds by half a step of the weight and of the input.
                        let bound = cin as f32 * (1.0 / q.q) * 1.0 + 1e-4;
                        let worst = want.iter().zip(got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                        assert!(worst <= bound, "{level} {cout}x{cin}x{plane} ({threads} threads): error {worst} > {bound}");
                        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                        assert!(worst <= 2e-3 * scale, "{level} {cout}x{cin}x{plane}: error {worst} vs values up to {scale}");
                    }
                }
            }
        }
    }

    #[test]
    fn both_kernels_give_the_same_values() {
        // Same rounding, same integer sums, same f32 steps after them: every
        // kernel (AVX-512 VNNI, AVX-VNNI, AVX2, SSE2) answers the same, to
        // the bit.
        let levels = levels_here();
        for &(cout, cin, plane) in &SHAPES {
            let (w, x, bias, alpha, res) = (values(cout * cin, 6), values(cin * plane, 7), values(cout, 8), values(cout, 9), values(cout * plane, 10));
            let q = Int16Weights::new(&w, cout, cin).unwrap();
            // Slopes of zero turn negative values into -0.0, which must keep its sign.
            let flat = vec![0.0; cout];
            for (alpha, residual) in [(None, None), (Some(&alpha[..]), None), (Some(&flat[..]), None), (Some(&alpha[..]), Some(&res[..]))] {
                let e = Epilogue { bias: &bias, alpha, residual };
                let outs: Vec<Vec<u32>> = levels
                    .iter()
                    .map(|&level| {
                        let mut out = vec![f32::NAN; cout * plane];
                        assert!(q.forward(level, &x, plane, &mut out, &e));
                        out.iter().map(|v| v.to_bits()).collect()
                    })
                    .collect();
                assert!(
                    outs.windows(2).all(|o| o[0] == o[1]),
                    "{cout}x{cin}x{plane} (slopes {}, residual {}): the kernels differ",
                    alpha.is_some(),
                    residual.is_some()
                );
            }
        }
    }

    #[test]
    fn no_sum_can_overflow() {
        // Every weight and input at the largest magnitude, all of one sign:
        // the sums are at their largest and must still be right.
        for cin in [1, 2, 63, 64, 512, 4096] {
            let (cout, plane) = (4, 8);
            let w = vec![1.0f32; cout * cin];
            let x = vec![-3.0f32; cin * plane];
            let bias = vec![0.0; cout];
            let q = Int16Weights::new(&w, cout, cin).unwrap();
            assert!(2.0 * q.pairs as f64 * (q.q as f64).powi(2) <= i32::MAX as f64);
            let e = Epilogue { bias: &bias, alpha: None, residual: None };
            for level in levels_here() {
                let mut got = vec![0f32; cout * plane];
                assert!(q.forward(level, &x, plane, &mut got, &e));
                for v in got {
                    assert!((v + 3.0 * cin as f32).abs() <= 1e-3 * cin as f32, "{level} cin {cin}: {v}");
                }
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_round() {
        assert!(Int16Weights::new(&[1.0, f32::NAN], 1, 2).is_none());
        assert!(Int16Weights::new(&[], 0, 2).is_none());
        let q = Int16Weights::new(&[1.0; 8], 4, 2).unwrap();
        let bias = [0.0; 4];
        let e = Epilogue { bias: &bias, alpha: None, residual: None };
        for level in SimdLevel::ALL {
            let mut out = vec![0f32; 4 * 8];
            let mut x = vec![1.0f32; 2 * 8];
            x[3] = f32::INFINITY;
            assert!(!q.forward(level, &x, 8, &mut out, &e));
            x[3] = f32::NAN;
            assert!(!q.forward(level, &x, 8, &mut out, &e));
            // Too narrow: the f32 product runs instead.
            assert!(!q.forward(level, &x[..2 * 4], 4, &mut out[..4 * 4], &e));
            // All zeros: zeros out (plus the bias).
            let zeros = vec![0f32; 2 * 8];
            if q.forward(level, &zeros, 8, &mut out, &e) {
                assert!(out.iter().all(|v| *v == 0.0));
            }
        }
        // The baseline's kernel is SSE2's, on x86_64 only; none on NEON.
        assert_eq!(Int16Weights::runs_here(SimdLevel::Baseline, 64), cfg!(target_arch = "x86_64"));
        assert!(!Int16Weights::runs_here(SimdLevel::Baseline, MIN_PLANE - 1));
        assert!(!Int16Weights::runs_here(SimdLevel::Neon, 64));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn input_step_finds_the_largest_magnitude_and_every_value_not_finite() {
        // The plain rule: `None` with a value not finite, else the largest
        // magnitude's step and its inverse.
        let reference = |x: &[f32], q: f32| -> Option<(f32, f32)> {
            if x.iter().any(|v| !v.is_finite()) {
                return None;
            }
            let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            Some(if max == 0.0 || !(q / max).is_finite() { (1.0, 0.0) } else { (max / q, q / max) })
        };
        let q = 16_383.0;
        let avx2 = int_kernel(SimdLevel::Avx2Fma).is_some();
        // Both copies must agree with it: SSE2's (every x86_64 CPU) and, on
        // a CPU with AVX2 and FMA, AVX2's.
        let step = |x: &[f32]| {
            // SAFETY: SSE2 is in every x86_64 CPU.
            let sse2 = unsafe { x86::sse2::input_step(x, q) };
            if avx2 {
                // SAFETY: the CPU has AVX2 and FMA.
                assert_eq!(unsafe { x86::input_step(x, q) }, sse2, "AVX2 and SSE2 differ on {x:?}");
            }
            sse2
        };
        // Every length through two blocks of four vectors and a tail; the
        // largest magnitude (of either sign, a subnormal, a negative zero)
        // and each value that is not finite at every position.
        for len in 0..=75 {
            let base: Vec<f32> = (0..len).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.25).collect();
            assert_eq!(step(&base), reference(&base, q), "len {len}");
            for at in 0..len {
                for v in [-7.5f32, 7.5, -0.0, 1e-40, f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -f32::MAX] {
                    let mut x = base.clone();
                    x[at] = v;
                    assert_eq!(step(&x), reference(&x, q), "len {len}, {v} at {at}");
                }
            }
            let tiny = vec![1e-44f32; len];
            assert_eq!(step(&tiny), reference(&tiny, q), "len {len}, tiny values");
        }
    }
}


