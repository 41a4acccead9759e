//! Depthwise 2-D convolution with a fast CPU kernel.
//!
//! candle's grouped convolution on CPU runs one tiny im2col + GEMM per group,
//! which for a depthwise layer (one group per channel) is two orders of
//! magnitude slower than an ordinary convolution. [`DepthwiseConv2d`] runs a
//! direct NCHW f32 kernel on CPU (bias and an optional PReLU fused in) and falls
//! back to candle's grouped convolution on other devices, so the `cuda`
//! feature keeps working.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;

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
        out.par_chunks_mut(plane * c).for_each(|sample| {
            for (ch, o) in sample.chunks_mut(plane).enumerate() {
                let b = params[ch];
                if rows == 2 {
                    let a = params[c + ch];
                    for v in o.iter_mut() {
                        let t = *v + b;
                        *v = if t < 0.0 { t * a } else { t };
                    }
                } else {
                    for v in o.iter_mut() {
                        *v += b;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
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
        let mut out = vec![0f32; n * c * oh * ow];
        let run = |(padded, row): &mut (Vec<f32>, Vec<f32>), (plane, o): (usize, &mut [f32])| {
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
            depthwise_plane(&geo, inp, k, params[ch], alpha, padded, row, o);
        };
        let buffers = || (Vec::new(), Vec::new());
        if rayon::current_num_threads() > 1 {
            out.par_chunks_mut(oh * ow)
                .enumerate()
                .for_each_init(buffers, run);
        } else {
            // One thread: stay on the caller's thread (no hand-off to the pool).
            let mut b = buffers();
            out.chunks_mut(oh * ow)
                .enumerate()
                .for_each(|item| run(&mut b, item));
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// Sizes of one depthwise plane computation.
#[derive(Debug, Clone, Copy)]
struct PlaneGeometry {
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

/// Convolves one `h x w` plane with its `kh x kw` kernel into `out`
/// (`oh x ow`), adding `bias` and applying the PReLU slope `alpha`.
///
/// Stride 1: the result is computed on a "wide" grid of `oh` rows x `wp`
/// columns, so that every kernel tap is one long contiguous multiply-add
/// over the whole plane (vectorises well), and the valid columns are kept.
/// Stride 2 and more: each output row is computed at stride 1 along its
/// input row and every `stride`-th value kept, so only the input rows an
/// output row needs are visited.
#[allow(clippy::too_many_arguments)]
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn depthwise_plane(
    geo: &PlaneGeometry,
    inp: &[f32],
    k: &[f32],
    bias: f32,
    alpha: Option<f32>,
    padded: &mut Vec<f32>,
    wide: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (s, p, wp, ow) = (geo.stride, geo.pad, geo.wp, geo.ow);
    // Rows read past the last one by the wide grid's tail: keep them zero.
    padded.clear();
    padded.resize(geo.hp * wp + geo.kw, 0.0);
    for (y, r) in inp.chunks_exact(geo.w).enumerate() {
        let at = (y + p.top) * wp + p.left;
        padded[at..at + geo.w].copy_from_slice(r);
    }
    // `max(v, 0) + a * min(v, 0)` is `v` for a = 1: no branch per value.
    let a = alpha.unwrap_or(1.0);
    let finish = |v: f32| {
        let v = v + bias;
        v.max(0.0) + a * v.min(0.0)
    };
    if s == 1 {
        let len = geo.oh * wp;
        wide.clear();
        wide.resize(len, 0.0);
        for ky in 0..geo.kh {
            for kx in 0..geo.kw {
                let wv = k[ky * geo.kw + kx];
                let off = ky * wp + kx;
                for (acc, v) in wide.iter_mut().zip(&padded[off..off + len]) {
                    *acc += wv * v;
                }
            }
        }
        for (o, w) in out.chunks_exact_mut(ow).zip(wide.chunks_exact(wp)) {
            for (dst, v) in o.iter_mut().zip(w) {
                *dst = finish(*v);
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
                    *acc += wv * v;
                }
            }
        }
        for (dst, v) in o.iter_mut().zip(wide.iter().step_by(s)) {
            *dst = finish(*v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let dev = Device::Cpu;
        for &(n, c, h, w, k, stride, same, prelu_on) in &[
            (2, 5, 9, 11, 3, 1, true, true),
            (1, 4, 12, 12, 3, 2, true, false),
            (3, 3, 7, 7, 7, 1, false, true),
            (1, 6, 8, 13, 3, 2, false, false),
            (2, 2, 5, 6, 3, 2, true, true),
        ] {
            let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1., (c, 1, k, k), &dev)?;
            let b = Tensor::randn(0f32, 1., c, &dev)?;
            let a = if prelu_on { Some(Tensor::randn(0f32, 1., c, &dev)?) } else { None };
            let layer = DepthwiseConv2d::new(wt, b, a, stride, same)?;
            let got = layer.forward(&x)?;
            let want = reference(&x, &layer)?;
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "max diff {diff} for {:?}", (n, c, h, w, k, stride, same));
        }
        Ok(())
    }
}
