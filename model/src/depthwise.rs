//! Depthwise 2-D convolution with a fast CPU kernel.
//!
//! candle's grouped convolution on CPU runs one tiny im2col + GEMM per group,
//! which for a depthwise layer (one group per channel) is two orders of
//! magnitude slower than an ordinary convolution. [`DepthwiseConv2d`] runs a
//! direct NCHW f32 kernel on CPU (bias and an optional PReLU fused in) and falls
//! back to candle's grouped convolution on other devices, so the `cuda`
//! feature keeps working.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
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

/// The CPU kernel: inputs x [N,C,H,W], weight [C,1,kh,kw], params [1|2, C].
struct DepthwiseOp {
    stride: usize,
    pad: Padding2d,
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("depthwise conv: {what} is not contiguous"),
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
        let x = contiguous_f32(s1, l1, "input")?;
        let wt = contiguous_f32(s2, l2, "weight")?;
        let params = contiguous_f32(s3, l3, "bias")?;
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
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow).enumerate().for_each(|(plane, o)| {
            let ch = plane % c;
            let inp = &x[plane * h * w..(plane + 1) * h * w];
            let k = &wt[ch * kh * kw..(ch + 1) * kh * kw];
            o.fill(params[ch]);
            for oy in 0..oh {
                let orow = &mut o[oy * ow..(oy + 1) * ow];
                for ky in 0..kh {
                    let iy = (oy * s + ky) as isize - p.top as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let irow = &inp[iy as usize * w..(iy as usize + 1) * w];
                    for kx in 0..kw {
                        let wv = k[ky * kw + kx];
                        // ox range with 0 <= ox*s + kx - left < w
                        let lo = p.left.saturating_sub(kx).div_ceil(s);
                        let hi = (w + p.left).saturating_sub(kx).div_ceil(s).min(ow); // exclusive, ix < w
                        if lo >= hi {
                            continue;
                        }
                        let ix0 = lo * s + kx - p.left;
                        if s == 1 {
                            for (ov, iv) in orow[lo..hi].iter_mut().zip(&irow[ix0..ix0 + (hi - lo)]) {
                                *ov += wv * iv;
                            }
                        } else {
                            for (j, ov) in orow[lo..hi].iter_mut().enumerate() {
                                *ov += wv * irow[ix0 + j * s];
                            }
                        }
                    }
                }
            }
            if rows == 2 {
                let a = params[c + ch];
                for v in o.iter_mut() {
                    if *v < 0.0 {
                        *v *= a;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
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
