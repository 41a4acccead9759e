//! Depthwise 2-D convolution with a fast CPU kernel.
//!
//! candle's grouped convolution on CPU runs one tiny im2col + GEMM per group,
//! which for a depthwise layer (one group per channel) is two orders of
//! magnitude slower than an ordinary convolution. [`DepthwiseConv2d`] runs a
//! direct NCHW f32 kernel on CPU (bias and an optional PReLU fused in) and falls
//! back to candle's grouped convolution on other devices, so the `cuda`
//! feature keeps working.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::memory::scratch;
use crate::simd::{madd, simd_kernel, simd_level, Isa};

/// Zero padding of a 2-D convolution, possibly asymmetric (TensorFlow "SAME"
/// pads the extra row/column at the bottom/right).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding2d {
    /// Rows added above.
    pub top: usize,
    /// Rows added below.
    pub bottom: usize,
    /// Columns added on the left.
    pub left: usize,
    /// Columns added on the right.
    pub right: usize,
}

impl Padding2d {
    /// No padding ("VALID").
    pub const VALID: Padding2d = Padding2d { top: 0, bottom: 0, left: 0, right: 0 };
    /// One row or column on every side (a 3x3 "SAME" layer of stride 1).
    pub const ONE: Padding2d = Padding2d { top: 1, bottom: 1, left: 1, right: 1 };

    /// TensorFlow "SAME" padding for a square `kernel` with `stride` over an
    /// `h` x `w` input: total padding `max((ceil(n/s) - 1) * s + k - n, 0)`,
    /// the smaller half before, the larger half after.
    pub fn tf_same(h: usize, w: usize, kernel: usize, stride: usize) -> Padding2d {
        let total = |n: usize| {
            let out = n.div_ceil(stride);
            ((out.saturating_sub(1)) * stride + kernel).saturating_sub(n)
        };
        let (th, tw) = (total(h), total(w));
        Padding2d { top: th / 2, bottom: th - th / 2, left: tw / 2, right: tw - tw / 2 }
    }

    /// Pads `x` (NCHW) with zeros.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.top + self.bottom > 0 { x.pad_with_zeros(2, self.top, self.bottom)? } else { x.clone() };
        if self.left + self.right > 0 {
            x.pad_with_zeros(3, self.left, self.right)
        } else {
            Ok(x)
        }
    }
}

/// A depthwise convolution layer (one `k x k` filter per channel) with bias
/// and an optional per-channel PReLU.
#[derive(Debug, Clone)]
pub struct DepthwiseConv2d {
    weight: Tensor,        // [C, 1, kh, kw]
    bias: Tensor,          // [C]
    alpha: Option<Tensor>, // [C]
    params: Tensor,        // [1 or 2, C]: bias, then alpha (CPU kernel input)
    stride: usize,
    same: bool,
}

impl DepthwiseConv2d {
    /// Builds the layer from a `[C, 1, kh, kw]` weight, a `[C]` bias and an
    /// optional `[C]` PReLU slope. `same` selects TensorFlow "SAME" padding
    /// (else "VALID").
    pub fn new(weight: Tensor, bias: Tensor, alpha: Option<Tensor>, stride: usize, same: bool) -> Result<Self> {
        let (c, one, _kh, _kw) = weight.dims4()?;
        if one != 1 || bias.dims1()? != c || alpha.as_ref().map(|a| a.dims1()).transpose()?.is_some_and(|n| n != c) {
            candle_core::bail!("depthwise conv: inconsistent weight {:?} / bias {:?}", weight.shape(), bias.shape());
        }
        let weight = weight.to_dtype(DType::F32)?.contiguous()?;
        let bias = bias.to_dtype(DType::F32)?;
        let alpha = alpha.map(|a| a.to_dtype(DType::F32)).transpose()?;
        let params = match &alpha {
            Some(a) => Tensor::stack(&[&bias, a], 0)?,
            None => bias.unsqueeze(0)?,
        }
        .contiguous()?;
        Ok(Self { weight, bias, alpha, params, stride, same })
    }

    fn padding(&self, h: usize, w: usize) -> Result<Padding2d> {
        let (_, _, kh, kw) = self.weight.dims4()?;
        if !self.same {
            return Ok(Padding2d::VALID);
        }
        let p = Padding2d::tf_same(h, w, kh, self.stride);
        let q = Padding2d::tf_same(h, w, kw, self.stride);
        Ok(Padding2d { top: p.top, bottom: p.bottom, left: q.left, right: q.right })
    }
}

impl Module for DepthwiseConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let pad = self.padding(h, w)?;
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let op = DepthwiseOp { stride: self.stride, pad };
            return x.contiguous()?.apply_op3_no_bwd(&self.weight, &self.params, &op);
        }
        // Generic path: candle's grouped convolution.
        let y = pad
            .apply(x)?
            .conv2d(&self.weight.to_dtype(x.dtype())?, 0, self.stride, 1, c)?
            .broadcast_add(&self.bias.to_dtype(x.dtype())?.reshape((1, c, 1, 1))?)?;
        match &self.alpha {
            Some(a) => prelu(&y, &a.to_dtype(x.dtype())?),
            None => Ok(y),
        }
    }
}

/// PReLU with a per-channel slope over an NCHW tensor: `max(x,0) + alpha * min(x,0)`.
pub fn prelu(x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let c = alpha.dims1()?;
    let a = alpha.reshape((1, c, 1, 1))?;
    let pos = x.relu()?;
    let neg = (x - &pos)?;
    pos + neg.broadcast_mul(&a)?
}

/// Per-channel bias plus optional PReLU over an NCHW tensor, in one pass on
/// CPU. `params` is `[1, C]` (bias) or `[2, C]` (bias, then PReLU slope).
pub fn bias_prelu(x: &Tensor, params: &Tensor) -> Result<Tensor> {
    let (rows, c) = params.dims2()?;
    if x.device().is_cpu() && x.dtype() == DType::F32 && params.dtype() == DType::F32 {
        return x.contiguous()?.apply_op2_no_bwd(&params.contiguous()?, &BiasPreluOp);
    }
    let p = params.to_dtype(x.dtype())?;
    let y = x.broadcast_add(&p.get(0)?.reshape((1, c, 1, 1))?)?;
    if rows == 2 {
        prelu(&y, &p.get(1)?)
    } else {
        Ok(y)
    }
}

struct BiasPreluOp;

impl CustomOp2 for BiasPreluOp {
    fn name(&self) -> &'static str {
        "facefleet-bias-prelu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "bias_prelu: input")?;
        let params = contiguous_f32(s2, l2, "bias_prelu: params")?;
        let dims = l1.shape().dims();
        if dims.len() < 2 {
            candle_core::bail!("bias_prelu: expected [N, C, ...], got {dims:?}");
        }
        let c = dims[1];
        let (rows, pc) = l2.shape().dims2()?;
        if pc != c || !(rows == 1 || rows == 2) {
            candle_core::bail!("bias_prelu: {c} channels but params {:?}", l2.shape());
        }
        let plane = dims[2..].iter().product::<usize>().max(1);
        let mut out = x.to_vec();
        let level = simd_level();
        let slopes = (rows == 2).then(|| &params[c..2 * c]);
        out.par_chunks_mut(plane * c)
            .for_each(|sample| bias_prelu_planes(level, sample, plane, &params[..c], slopes));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

simd_kernel! {
/// Adds `bias[ch]` to plane `ch` of `sample` (`bias.len()` planes of
/// `plane` values), then applies the PReLU slope `slopes[ch]` if given.
fn bias_prelu_planes(sample: &mut [f32], plane: usize, bias: &[f32], slopes: Option<&[f32]>) {
    for (ch, o) in sample.chunks_mut(plane).enumerate() {
        let b = bias[ch];
        match slopes {
            Some(a) => {
                let a = a[ch];
                for v in o.iter_mut() {
                    let t = *v + b;
                    // Branch-free; equals `t < 0 ? a * t : t`.
                    *v = t.max(0.0) + a * t.min(0.0);
                }
            }
            None => o.iter_mut().for_each(|v| *v += b),
        }
    }
}
}

/// The CPU kernel: inputs x [N,C,H,W], weight [C,1,kh,kw], params [1|2, C].
struct DepthwiseOp {
    stride: usize,
    pad: Padding2d,
}

/// The f32 values of a custom op's input, which must be contiguous; `what`
/// names it in the error.
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} is not contiguous"),
    }
}

impl CustomOp3 for DepthwiseOp {
    fn name(&self) -> &'static str {
        "facefleet-depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "depthwise conv: input")?;
        let wt = contiguous_f32(s2, l2, "depthwise conv: weight")?;
        let params = contiguous_f32(s3, l3, "depthwise conv: bias")?;
        let (n, c, h, w) = l1.shape().dims4()?;
        let (wc, _, kh, kw) = l2.shape().dims4()?;
        let (rows, pc) = l3.shape().dims2()?;
        if wc != c || pc != c {
            candle_core::bail!("depthwise conv: {c} input channels, weight {wc}, bias {pc}");
        }
        let (s, p) = (self.stride, self.pad);
        let (hp, wp) = (h + p.top + p.bottom, w + p.left + p.right);
        if hp < kh || wp < kw || s == 0 {
            candle_core::bail!("depthwise conv: input {h}x{w} too small for kernel {kh}x{kw}");
        }
        let (oh, ow) = ((hp - kh) / s + 1, (wp - kw) / s + 1);
        let geo = PlaneGeometry {
            h,
            w,
            hp,
            wp,
            kh,
            kw,
            stride: s,
            pad: p,
            oh,
            ow,
        };
        let len = n * c * oh * ow;
        // Not zeroed (that pass cost as much as a tenth of the layer): each
        // plane's kernel writes all of its values.
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let level = simd_level();
        let run = |(padded, row, masks): &mut (Vec<f32>, Vec<f32>, EdgeMasks), (plane, o): (usize, &mut [MaybeUninit<f32>])| {
            let ch = plane % c;
            let alpha = if rows == 2 {
                Some(params[c + ch])
            } else {
                None
            };
            let (inp, k) = (
                &x[plane * h * w..(plane + 1) * h * w],
                &wt[ch * kh * kw..(ch + 1) * kh * kw],
            );
            depthwise_plane(level, &geo, inp, k, params[ch], alpha, padded, row, masks, o);
        };
        // Scratch for one layer call: `dw3_stride2` relies on its buffer
        // never having held another geometry's planes.
        let buffers = || (Vec::new(), Vec::new(), EdgeMasks::default());
        if rayon::current_num_threads() > 1 {
            out.spare_capacity_mut()[..len]
                .par_chunks_mut(oh * ow)
                .enumerate()
                .for_each_init(buffers, run);
        } else {
            // One thread: stay on the caller's thread (no hand-off to the pool).
            let mut b = buffers();
            out.spare_capacity_mut()[..len]
                .chunks_mut(oh * ow)
                .enumerate()
                .for_each(|item| run(&mut b, item));
        }
        // SAFETY: each plane's kernel initialised all of its `oh * ow` values.
        unsafe { out.set_len(len) };
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// Sizes of one depthwise plane computation.
#[derive(Debug, Clone, Copy)]
struct PlaneGeometry {
    h: usize,
    w: usize,
    hp: usize,
    wp: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: Padding2d,
    oh: usize,
    ow: usize,
}

/// Partial sums of [`dot`]: one AVX-512 vector, two AVX2 / four NEON vectors.
const BLOCK: usize = 16;

simd_kernel! {
/// Convolves one `h x w` plane with its `kh x kw` kernel into `out`
/// (`oh x ow`), adding `bias` and applying the PReLU slope `alpha`.
///
/// 3x3 kernels with stride 1 or 2 (all of MobileFaceNet's but the last)
/// take [`dw3_same`] (stride 1 with one row and column of padding on every
/// side), [`dw3_stride1`] or [`dw3_stride2`]: one flat pass over the plane
/// with the nine taps multiplied and added in registers, stored once. A
/// kernel as large as its unpadded input (the global depthwise layer) is a
/// dot product. Anything else takes [`dw_generic`].
fn depthwise_plane(
    geo: &PlaneGeometry,
    inp: &[f32],
    k: &[f32],
    bias: f32,
    alpha: Option<f32>,
    padded: &mut Vec<f32>,
    wide: &mut Vec<f32>,
    masks: &mut EdgeMasks,
    out: &mut [MaybeUninit<f32>],
) {
    let epi = Prelu { bias, slope: alpha.unwrap_or(1.0) };
    if geo.kh == geo.h && geo.kw == geo.w && geo.pad == Padding2d::VALID {
        out[0].write(epi.apply(dot::<S>(inp, k)));
    } else if geo.kh == 3 && geo.kw == 3 && geo.stride == 1 && geo.pad == Padding2d::ONE {
        dw3_same::<S>(geo, inp, k, epi, padded, masks, out);
    } else if geo.kh == 3 && geo.kw == 3 && geo.stride == 1 {
        dw3_stride1::<S>(geo, inp, k, epi, padded, wide, out);
    } else if geo.kh == 3 && geo.kw == 3 && geo.stride == 2 {
        dw3_stride2::<S>(geo, inp, k, epi, padded, wide, out);
    } else {
        dw_generic::<S>(geo, inp, k, epi, padded, wide, out);
    }
}
}

/// Bias, then PReLU (`v` for a slope of 1).
#[derive(Debug, Clone, Copy)]
struct Prelu {
    bias: f32,
    slope: f32,
}

impl Prelu {
    /// `max(v, 0) + slope * min(v, 0)` of `v + bias`: no branch per value.
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        let v = v + self.bias;
        v.max(0.0) + self.slope * v.min(0.0)
    }
}

/// `sum(a[i] * b[i])` with [`BLOCK`] partial sums (vectorised), in the
/// same order on every level.
#[inline(always)]
pub(crate) fn dot<S: Isa>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; BLOCK];
    let (ac, bc) = (a.chunks_exact(BLOCK), b.chunks_exact(BLOCK));
    let tail = ac.remainder().iter().zip(bc.remainder()).fold(0.0, |s, (x, y)| madd::<S>(*x, *y, s));
    for (x, y) in ac.zip(bc) {
        for i in 0..BLOCK {
            acc[i] = madd::<S>(x[i], y[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Nine-tap multiply-add over a flat grid: `out[i] = epi(sum over t of
/// k[t] * taps[t][i])`, each tap row at least `out.len()` long. One long
/// element-wise loop (no reduction), so it vectorises at the level's width,
/// with FMAs where the level has them, and out-of-order execution overlaps
/// its iterations.
#[inline(always)]
fn taps9<S: Isa>(k: &[f32], taps: [&[f32]; 9], epi: Prelu, out: &mut [MaybeUninit<f32>]) {
    let n = out.len();
    let [t0, t1, t2, t3, t4, t5, t6, t7, t8] = taps;
    let (t0, t1, t2, t3, t4, t5, t6, t7, t8) =
        (&t0[..n], &t1[..n], &t2[..n], &t3[..n], &t4[..n], &t5[..n], &t6[..n], &t7[..n], &t8[..n]);
    let k: &[f32; 9] = k[..9].try_into().unwrap();
    for i in 0..n {
        out[i].write(epi.apply(nine::<S>(k, [t0[i], t1[i], t2[i], t3[i], t4[i], t5[i], t6[i], t7[i], t8[i]])));
    }
}

/// `sum(k[t] * x[t])` over nine taps as three independent chains, one per
/// kernel row, joined at the end (shorter latency): the sums of [`taps9`]
/// ([`dw3_same`] chains per kernel column instead).
#[inline(always)]
fn nine<S: Isa>(k: &[f32; 9], x: [f32; 9]) -> f32 {
    let a = madd::<S>(k[2], x[2], madd::<S>(k[1], x[1], k[0] * x[0]));
    let b = madd::<S>(k[5], x[5], madd::<S>(k[4], x[4], k[3] * x[3]));
    let c = madd::<S>(k[8], x[8], madd::<S>(k[7], x[7], k[6] * x[6]));
    a + b + c
}

/// `v` as values a kernel may overwrite: the output type of [`taps9`].
#[inline(always)]
fn as_uninit(v: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: the same layout; only initialised values are written through
    // the result (`taps9` writes `f32`s), so `v` stays initialised.
    unsafe { &mut *(v as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// Copies the valid `ow` columns of each `stride`-long row of `wide` into
/// `out` (`ow` per row).
#[inline(always)]
fn compact(wide: &[f32], stride: usize, ow: usize, out: &mut [MaybeUninit<f32>]) {
    for (o, w) in out.chunks_exact_mut(ow).zip(wide.chunks(stride)) {
        o.write_copy_of_slice(&w[..ow]);
    }
}

/// Copies input row `y` of the padded plane (zeros outside the input) into
/// `row` (padded column `j` to `row[j]`; columns past the padded width are
/// zero).
#[inline(always)]
fn padded_row(geo: &PlaneGeometry, inp: &[f32], y: usize, row: &mut [f32]) {
    let p = geo.pad;
    if y < p.top || y >= p.top + geo.h {
        row.fill(0.0);
        return;
    }
    let src = &inp[(y - p.top) * geo.w..(y - p.top + 1) * geo.w];
    let left = p.left.min(row.len());
    between_zeros(row, left, &src[..geo.w.min(row.len() - left)]);
}

/// Fills `dst` with `before` zeros, then `src`, then zeros to its end.
#[inline(always)]
fn between_zeros(dst: &mut [f32], before: usize, src: &[f32]) {
    let (zeros, rest) = dst.split_at_mut(before);
    zeros.fill(0.0);
    let (copy, after) = rest.split_at_mut(src.len());
    copy.copy_from_slice(src);
    after.fill(0.0);
}

/// 3x3, stride 1, one row and column of zeros on every side (TF "SAME"):
/// the output has the input's size, so output `i`'s taps are input values
/// `i + (ky - 1) * w + kx - 1`, and one flat loop over the cells writes
/// `out` directly, with no per-row copies. Rows 2 to `h - 3` read the plane
/// itself (every such tap lies inside it); the first two and last two rows
/// read a copy of their rows between a row (and one value) of zeros, and a
/// plane under [`DW3_SAME_COPIED`] values or of fewer than 5 rows is copied
/// whole that way (its regions would be too short for whole vectors). Read flat, a left tap of
/// the first column would find the previous row's last value where the
/// padding has a zero, and a right tap of the last column the next row's
/// first; so the taps are summed in one chain per kernel column, and
/// [`EdgeMasks`] clear the left column's sum in the first column and the
/// right one's in the last (each a bitwise AND, where the zeros of the
/// padding would have added nothing). The loops run over spans of whole
/// rows, so one short span of masks serves the whole plane.
#[inline(always)]
fn dw3_same<S: Isa>(
    geo: &PlaneGeometry,
    inp: &[f32],
    k: &[f32],
    epi: Prelu,
    buf: &mut Vec<f32>,
    masks: &mut EdgeMasks,
    out: &mut [MaybeUninit<f32>],
) {
    let (h, w) = (geo.h, geo.w);
    let n = h * w;
    let k: &[f32; 9] = k[..9].try_into().unwrap();
    let masks = masks.for_width(w);
    let out = &mut out[..n];
    // The middle rows (all of them from a copy of the plane when it is
    // small) and the first two and last two rows (from copies of their own).
    let ((top, first), (src, base, middle), (bottom, last)) = if n < DW3_SAME_COPIED || h < 5 {
        let mid = scratch(buf, n + 2 * (w + 1));
        between_zeros(mid, w + 1, inp);
        ((&[][..], &mut [][..]), (&*mid, 0, out), (&[][..], &mut [][..]))
    } else {
        // Rows 0 and 1 read rows -1 (zeros) to 2, rows h - 2 and h - 1 rows
        // h - 3 to h (zeros): each copy `4 * w + 2` values, taps from its
        // start. Row 2's taps start at plane value `2 * w - w - 1`.
        let edges = scratch(buf, 2 * (4 * w + 2));
        let (top, bottom) = edges.split_at_mut(4 * w + 2);
        between_zeros(top, w + 1, &inp[..3 * w]);
        between_zeros(bottom, 1, &inp[n - 3 * w..]);
        let (first, rest) = out.split_at_mut(2 * w);
        let (middle, last) = rest.split_at_mut(n - 4 * w);
        ((&*top, first), (inp, w - 1, middle), (&*bottom, last))
    };
    dw3_same_rows::<S>(w, top, 0, k, epi, masks, first);
    dw3_same_rows::<S>(w, src, base, k, epi, masks, middle);
    dw3_same_rows::<S>(w, bottom, 0, k, epi, masks, last);
}

/// Planes of fewer values than this are copied whole by [`dw3_same`]
/// (direct reads made the 14x14 planes a fifth slower, the 7x7 ones three
/// times; the 28x28 ones, 784 values, a tenth faster).
const DW3_SAME_COPIED: usize = 512;

/// [`dw3_same`]'s loop over whole rows `w` wide: tap `(ky, kx)` of cell `i`
/// of `out` is `src[base + i + ky * w + kx]`; `masks` as
/// [`EdgeMasks::for_width`] gives them.
#[inline(always)]
fn dw3_same_rows<S: Isa>(
    w: usize,
    src: &[f32],
    base: usize,
    k: &[f32; 9],
    epi: Prelu,
    (keep_left, keep_right): (&[u32], &[u32]),
    out: &mut [MaybeUninit<f32>],
) {
    let span = keep_left.len();
    let and = |x: f32, m: u32| f32::from_bits(x.to_bits() & m);
    for (c, out) in out.chunks_mut(span).enumerate() {
        let m = out.len();
        let t = |ky: usize, kx: usize| &src[base + c * span + ky * w + kx..][..m];
        let (t0, t1, t2, t3, t4, t5, t6, t7, t8) = (t(0, 0), t(0, 1), t(0, 2), t(1, 0), t(1, 1), t(1, 2), t(2, 0), t(2, 1), t(2, 2));
        let (keep_left, keep_right) = (&keep_left[..m], &keep_right[..m]);
        for i in 0..m {
            let left = madd::<S>(k[6], t6[i], madd::<S>(k[3], t3[i], k[0] * t0[i]));
            let middle = madd::<S>(k[7], t7[i], madd::<S>(k[4], t4[i], k[1] * t1[i]));
            let right = madd::<S>(k[8], t8[i], madd::<S>(k[5], t5[i], k[2] * t2[i]));
            out[i].write(epi.apply(and(left, keep_left[i]) + middle + and(right, keep_right[i])));
        }
    }
}

/// The column masks of [`dw3_same`] for planes `width` wide, over a span of
/// whole rows (a multiple of the width and of 8, at least 128 values): for
/// each value, all ones unless it is in the first column (`keep_left`) or
/// the last (`keep_right`), where they are zero.
#[derive(Debug, Default)]
struct EdgeMasks {
    width: usize,
    keep_left: Vec<u32>,
    keep_right: Vec<u32>,
}

impl EdgeMasks {
    /// The masks for `width` (at least 1), built if the last call was for
    /// another width.
    fn for_width(&mut self, width: usize) -> (&[u32], &[u32]) {
        if self.width != width {
            // A multiple of 8 rows, so of 8 values, and at least 128 values.
            let span = width * 8 * 16usize.div_ceil(width);
            let mask = |edge: usize| (0..span).map(|i| if i % width == edge { 0 } else { u32::MAX }).collect();
            (self.width, self.keep_left, self.keep_right) = (width, mask(0), mask(width - 1));
        }
        (&self.keep_left, &self.keep_right)
    }
}

/// 3x3, stride 1: pads the plane (rows of `wp`), then computes the "wide"
/// grid of `oh` rows x `wp` columns in one flat [`taps9`] loop (tap `(ky,
/// kx)` of grid cell `i` is padded value `i + ky * wp + kx`; the last two
/// columns of each row are discarded) and keeps the valid columns.
#[inline(always)]
fn dw3_stride1<S: Isa>(
    geo: &PlaneGeometry,
    inp: &[f32],
    k: &[f32],
    epi: Prelu,
    buf: &mut Vec<f32>,
    wide: &mut Vec<f32>,
    out: &mut [MaybeUninit<f32>],
) {
    let wp = geo.wp;
    let len = geo.hp * wp + 2; // the last cell's last tap reads 2 past the plane
    let pad = scratch(buf, len);
    for (y, row) in pad.chunks_exact_mut(wp).enumerate() {
        padded_row(geo, inp, y, row);
    }
    pad[geo.hp * wp..].fill(0.0);
    let n = geo.oh * wp;
    let wide = scratch(wide, n);
    let t = |ky: usize, kx: usize| &pad[ky * wp + kx..];
    let taps = [t(0, 0), t(0, 1), t(0, 2), t(1, 0), t(1, 1), t(1, 2), t(2, 0), t(2, 1), t(2, 2)];
    taps9::<S>(k, taps, epi, as_uninit(wide));
    compact(wide, wp, geo.ow, out);
}

/// 3x3, stride 2, by polyphase decomposition: the padded plane is split
/// into four planes by row and column parity (even rows / even columns,
/// even / odd, odd / even, odd / odd), each with rows of `ow + 1`. Output
/// `(y, x)` then reads cells `i = y * (ow + 1) + x`, `i + 1`, `i + ow + 1`
/// and `i + ow + 2` of those planes: one flat [`taps9`] loop again.
#[inline(always)]
fn dw3_stride2<S: Isa>(
    geo: &PlaneGeometry,
    inp: &[f32],
    k: &[f32],
    epi: Prelu,
    buf: &mut Vec<f32>,
    wide: &mut Vec<f32>,
    out: &mut [MaybeUninit<f32>],
) {
    let half = geo.ow + 1;
    let rows = geo.oh + 1;
    let plane = rows * half + 1;
    // Zeroed once per layer: a layer's planes all write the same cells (the
    // input's), so the padding keeps its zeros from one plane to the next.
    // (The buffers live for one layer call: see `DepthwiseOp::cpu_fwd`.)
    if buf.len() != 4 * plane {
        buf.clear();
        buf.resize(4 * plane, 0.0);
    }
    let all = &mut buf[..];
    let p = geo.pad;
    {
        let (ee, rest) = all.split_at_mut(plane);
        let (eo, rest) = rest.split_at_mut(plane);
        let (oe, oo) = rest.split_at_mut(plane);
        let mut planes = [[ee, eo], [oe, oo]];
        let shift = p.left % 2;
        for (r, src) in inp.chunks_exact(geo.w).enumerate() {
            let py = r + p.top;
            if py / 2 >= rows {
                break;
            }
            let [pe, po] = &mut planes[py % 2];
            let (even, odd) = (&mut pe[(py / 2) * half..(py / 2 + 1) * half], &mut po[(py / 2) * half..(py / 2 + 1) * half]);
            // Padded column c = left + i goes to (c even ? even : odd)[c / 2]:
            // src[2j] -> first[start + j], src[2j + 1] -> second[start + shift + j].
            let (first, second, start) = if shift == 0 { (even, odd, p.left / 2) } else { (odd, even, p.left / 2) };
            let pairs = (geo.w / 2).min(half.saturating_sub(start + shift));
            deinterleave::<S>(&src[..2 * pairs], &mut first[start..start + pairs], &mut second[start + shift..start + shift + pairs]);
            if geo.w % 2 == 1 && start + pairs < half {
                first[start + pairs] = src[geo.w - 1];
            }
        }
    }
    let all = &*all;
    let (ee, eo, oe, oo) = (&all[..plane], &all[plane..2 * plane], &all[2 * plane..3 * plane], &all[3 * plane..]);
    let n = geo.oh * half;
    let wide = scratch(wide, n);
    let taps = [ee, eo, &ee[1..], oe, oo, &oe[1..], &ee[half..], &eo[half..], &ee[half + 1..]];
    taps9::<S>(k, taps, epi, as_uninit(wide));
    compact(wide, half, geo.ow, out);
}

/// Splits `src` into its even- and odd-indexed values: `even[j] = src[2j]`,
/// `odd[j] = src[2j + 1]` (`src` holds `2 * even.len()` values). x86_64's
/// AVX2 and AVX-512 levels (`S::LANES >= 8`) split 8 pairs per step (4 for
/// fewer than 8) with shuffles, which LLVM does not find for this loop;
/// elsewhere plain copies (aarch64 compiles them to `ld2`).
#[inline(always)]
// `S` picks the x86_64 path only.
#[cfg_attr(not(target_arch = "x86_64"), allow(clippy::extra_unused_type_parameters))]
fn deinterleave<S: Isa>(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let n = even.len();
    assert!(odd.len() == n && src.len() == 2 * n, "deinterleave: {} values into {n} pairs", src.len());
    #[cfg(target_arch = "x86_64")]
    let done = if S::LANES >= 8 {
        use std::arch::x86_64::*;
        let mut done = 0;
        // SAFETY: `S` is one of the x86_64 levels with AVX2, whose bodies
        // run only on CPUs that have it; every step reads and writes pairs
        // `at..at + 8` with `at + 8 <= n` (or `at..at + 4` with `at + 4 <=
        // n`), so it stays within the slices.
        unsafe {
            let (src, even, odd) = (src.as_ptr(), even.as_mut_ptr(), odd.as_mut_ptr());
            // Whole steps, then one last step ending at `n` that overlaps
            // the one before (it writes the same values again), so short
            // rows (7, 14 or 28 pairs in MobileFaceNet) need no scalar tail.
            if n >= 8 {
                let mut j = 0;
                loop {
                    let at = j.min(n - 8);
                    let a = _mm256_loadu_ps(src.add(2 * at));
                    let b = _mm256_loadu_ps(src.add(2 * at + 8));
                    // Per 128-bit half: a0 a2 b0 b2 | a4 a6 b4 b6; then the quarters in order.
                    let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                    let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
                    let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
                    _mm256_storeu_ps(even.add(at), order(e));
                    _mm256_storeu_ps(odd.add(at), order(o));
                    if at == n - 8 {
                        break;
                    }
                    j += 8;
                }
                done = n;
            } else if n >= 4 {
                for at in [0, n - 4] {
                    let a = _mm_loadu_ps(src.add(2 * at));
                    let b = _mm_loadu_ps(src.add(2 * at + 4));
                    _mm_storeu_ps(even.add(at), _mm_shuffle_ps::<0b10_00_10_00>(a, b));
                    _mm_storeu_ps(odd.add(at), _mm_shuffle_ps::<0b11_01_11_01>(a, b));
                }
                done = n;
            }
        }
        done
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for j in done..n {
        even[j] = src[2 * j];
        odd[j] = src[2 * j + 1];
    }
}

/// Any kernel size and stride. Stride 1: the result is computed on a
/// "wide" grid of `oh` rows x `wp` columns, so that every kernel tap is one
/// long contiguous multiply-add over the whole plane, and the valid columns
/// are kept. Stride 2 and more: each output row is computed at stride 1
/// along its input row and every `stride`-th value kept.
#[inline(always)]
fn dw_generic<S: Isa>(
    geo: &PlaneGeometry,
    inp: &[f32],
    k: &[f32],
    epi: Prelu,
    padded: &mut Vec<f32>,
    wide: &mut Vec<f32>,
    out: &mut [MaybeUninit<f32>],
) {
    let (s, wp, ow) = (geo.stride, geo.wp, geo.ow);
    // Rows read past the last one by the wide grid's tail: keep them zero.
    padded.clear();
    padded.resize(geo.hp * wp + geo.kw, 0.0);
    for (y, row) in padded.chunks_exact_mut(wp).enumerate().take(geo.hp) {
        padded_row(geo, inp, y, row);
    }
    if s == 1 {
        let len = geo.oh * wp;
        wide.clear();
        wide.resize(len, 0.0);
        for ky in 0..geo.kh {
            for kx in 0..geo.kw {
                let wv = k[ky * geo.kw + kx];
                let off = ky * wp + kx;
                for (acc, v) in wide.iter_mut().zip(&padded[off..off + len]) {
                    *acc = madd::<S>(wv, *v, *acc);
                }
            }
        }
        for (o, w) in out.chunks_exact_mut(ow).zip(wide.chunks_exact(wp)) {
            for (dst, v) in o.iter_mut().zip(w) {
                dst.write(epi.apply(*v));
            }
        }
        return;
    }
    let span = (ow - 1) * s + 1;
    wide.clear();
    wide.resize(span, 0.0);
    for (oy, o) in out.chunks_exact_mut(ow).enumerate().take(geo.oh) {
        wide.fill(0.0);
        for ky in 0..geo.kh {
            let line = &padded[(oy * s + ky) * wp..];
            for kx in 0..geo.kw {
                let wv = k[ky * geo.kw + kx];
                for (acc, v) in wide.iter_mut().zip(&line[kx..kx + span]) {
                    *acc = madd::<S>(wv, *v, *acc);
                }
            }
        }
        for (dst, v) in o.iter_mut().zip(wide.iter().step_by(s)) {
            dst.write(epi.apply(*v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::SimdLevel;
    use candle_core::Device;

    fn reference(x: &Tensor, layer: &DepthwiseConv2d) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let pad = layer.padding(h, w)?;
        let y = pad
            .apply(x)?
            .conv2d(&layer.weight, 0, layer.stride, 1, c)?
            .broadcast_add(&layer.bias.reshape((1, c, 1, 1))?)?;
        match &layer.alpha {
            Some(a) => prelu(&y, a),
            None => Ok(y),
        }
    }

    #[test]
    fn bias_prelu_matches_unfused_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 4, 5), &dev)?;
        let b = Tensor::randn(0f32, 1., 3, &dev)?;
        let a = Tensor::randn(0f32, 1., 3, &dev)?;
        let want = prelu(&x.broadcast_add(&b.reshape((1, 3, 1, 1))?)?, &a)?;
        let got = bias_prelu(&x, &Tensor::stack(&[&b, &a], 0)?)?;
        let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-6);
        let got = bias_prelu(&x, &b.unsqueeze(0)?)?;
        let want = x.broadcast_add(&b.reshape((1, 3, 1, 1))?)?;
        assert!((got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? < 1e-6);
        Ok(())
    }

    #[test]
    fn tf_same_padding_is_asymmetric_for_stride_two() {
        assert_eq!(Padding2d::tf_same(112, 112, 3, 2), Padding2d { top: 0, bottom: 1, left: 0, right: 1 });
        assert_eq!(Padding2d::tf_same(56, 56, 3, 1), Padding2d { top: 1, bottom: 1, left: 1, right: 1 });
        assert_eq!(Padding2d::tf_same(7, 7, 3, 2), Padding2d { top: 1, bottom: 1, left: 1, right: 1 });
    }

    #[test]
    fn cpu_kernel_matches_grouped_conv() -> Result<()> {
        for &(n, c, h, w, k, stride, same, prelu_on) in &[
            (2, 5, 9, 11, 3, 1, true, true),
            (1, 4, 12, 12, 3, 2, true, false),
            (3, 3, 7, 7, 7, 1, false, true),
            (1, 6, 8, 13, 3, 2, false, false),
            (2, 2, 5, 6, 3, 2, true, true),
            // MobileFaceNet's shapes: stride 2 with TF padding, odd sizes, the 7x7 global layer.
            (1, 3, 56, 56, 3, 2, true, true),
            (1, 3, 56, 56, 3, 1, true, true),
            (1, 3, 14, 14, 3, 1, true, false),
            (2, 2, 2, 5, 3, 1, true, true),
            (1, 3, 7, 7, 3, 2, true, true),
            (1, 3, 13, 9, 3, 2, true, true),
            (1, 4, 7, 7, 7, 1, false, false),
            (1, 3, 1, 1, 3, 1, true, true),
            (1, 3, 9, 11, 5, 3, true, true),
            // `dw3_same`'s masks over several spans of rows, the last one
            // short (width 11: spans of 176 values), and a width of one
            // (each value both the first and the last of its row).
            (1, 2, 40, 11, 3, 1, true, true),
            (1, 2, 17, 1, 3, 1, true, false),
        ] {
            matches_grouped_conv((n, c, h, w), k, stride, same, prelu_on)?;
        }
        Ok(())
    }

    /// A random input of `shape` through a random `k x k` layer on every
    /// level this CPU runs, against candle's grouped convolution.
    fn matches_grouped_conv(shape: (usize, usize, usize, usize), k: usize, stride: usize, same: bool, prelu: bool) -> Result<()> {
        let (dev, c) = (Device::Cpu, shape.1);
        let x = Tensor::randn(0f32, 1., shape, &dev)?;
        let wt = Tensor::randn(0f32, 1., (c, 1, k, k), &dev)?;
        let b = Tensor::randn(0f32, 1., c, &dev)?;
        let a = if prelu { Some(Tensor::randn(0f32, 1., c, &dev)?) } else { None };
        let layer = DepthwiseConv2d::new(wt, b, a, stride, same)?;
        let want = reference(&x, &layer)?;
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            let got = crate::simd::with_level(level, || layer.forward(&x))?;
            assert_eq!(got.dims(), want.dims());
            let diff = (got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{level}: max diff {diff} for {:?}", (shape, k, stride, same, prelu));
        }
        Ok(())
    }

    /// `dw3_same` reads rows 2 to `h - 3` of a plane of at least
    /// `DW3_SAME_COPIED` values in place, its first and last two rows from
    /// copies: planes just under and over that size, at every row width from
    /// 1 to 40 and a few wider ones, as short as 4 rows (copied whole) and 5
    /// (one middle row), and taller.
    #[test]
    fn dw3_same_matches_grouped_conv_on_both_sides_of_its_copy_threshold() -> Result<()> {
        let wide = [(4, 300), (5, 205), (5, 103), (6, 171), (7, 150), (4, 256)];
        let rows = |w: usize| {
            let tall = DW3_SAME_COPIED.div_ceil(w).max(5);
            [5, 6, tall - 1, tall, tall + 1, tall + 2].map(move |h| (h.max(4), w))
        };
        for (h, w) in (1..=40).flat_map(rows).chain(wide) {
            matches_grouped_conv((1, 2, h, w), 3, 1, true, true)?;
        }
        Ok(())
    }

    /// Every row width from 1 to 40 at stride 1 and 2: stride 2 splits rows
    /// of every length into even and odd columns (whole vector steps, an
    /// overlapping last step, the 4-pair step, plain copies), stride 1 puts
    /// the first and last columns anywhere in `dw3_same`'s span of masks.
    #[test]
    fn cpu_kernel_matches_grouped_conv_at_every_width() -> Result<()> {
        for w in 1..=40 {
            for stride in [1, 2] {
                matches_grouped_conv((1, 2, 5, w), 3, stride, true, false)?;
            }
        }
        Ok(())
    }
}
