//! MobileFaceNet (sirius-ai/MobileFaceNet_TF as shipped in TFLite form),
//! 112x112 RGB input normalised `(x - 127.5) / 128`, 192-d output.
//!
//! Faithful to the TFLite graph: TensorFlow "SAME" padding (asymmetric on the
//! stride-2 layers: nothing top/left, one row/column bottom/right), PReLU
//! after every expansion and depthwise layer, linear bottleneck projections,
//! a 7x7 global depthwise ("GDC") layer and two linear 1x1 layers. Weights come
//! from `model/weights/mobilefacenet.safetensors`
//! (`scripts/weights/mobilefacenet.py`), tensors named as in [`MobileFaceNet::load`].

use crate::depthwise::{bias_prelu, DepthwiseConv2d, Padding2d};
use crate::pointwise::Pointwise;
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// (expansion, output channels, repeats, stride of the first repeat) per stage.
/// Must match `scripts/weights/mobilefacenet.py`.
const STAGES: [(usize, usize, usize, usize); 5] = [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)];

/// Embedding dimension.
pub const EMBEDDING_DIM: usize = 192;
/// Input chip side in pixels.
pub const INPUT_SIZE: usize = 112;

/// An ordinary convolution with bias, TF "SAME" (or "VALID") padding and an
/// optional PReLU. 1x1 stride-1 layers run as a fused [`Pointwise`] kernel;
/// larger kernels on CPU as [`im2col`] followed by the same fused kernel
/// (so their matrix product follows the forced SIMD level too).
#[derive(Debug, Clone)]
struct Conv {
    weight: Tensor,               // [O, I, k, k]
    pointwise: Option<Pointwise>, // for 1x1 stride-1 layers
    /// `[O, I * k * k]` weights as a pointwise layer over [`im2col`] columns.
    unfolded: Option<Pointwise>,
    params: Tensor, // [1 or 2, O]: bias, then PReLU slope
    stride: usize,
    same: bool,
}

impl Conv {
    fn load(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize, same: bool, with_prelu: bool) -> Result<Self> {
        let weight = vb.get((cout, cin, k, k), "weight")?.to_dtype(DType::F32)?;
        let bias = vb.get(cout, "bias")?.to_dtype(DType::F32)?;
        let alpha = if with_prelu { Some(vb.get(cout, "alpha")?.to_dtype(DType::F32)?) } else { None };
        let pointwise = if k == 1 && stride == 1 { Some(Pointwise::new(&weight, &bias, alpha.as_ref())?) } else { None };
        let unfolded = if pointwise.is_none() {
            Some(Pointwise::new(&weight.reshape((cout, cin * k * k))?, &bias, alpha.as_ref())?)
        } else {
            None
        };
        let params = match alpha {
            Some(a) => Tensor::stack(&[bias, a], 0)?,
            None => bias.unsqueeze(0)?,
        };
        Ok(Self { weight, pointwise, unfolded, params, stride, same })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_add(x, None)
    }

    /// The layer's output, plus `residual` when given.
    fn forward_add(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        if let Some(p) = &self.pointwise {
            return p.forward(x, residual);
        }
        let (_, _, h, w) = x.dims4()?;
        let (_, _, k, _) = self.weight.dims4()?;
        let pad = if self.same { Padding2d::tf_same(h, w, k, self.stride) } else { Padding2d::VALID };
        if let (Some(u), true) = (&self.unfolded, x.device().is_cpu() && x.dtype() == DType::F32) {
            return u.forward(&im2col(x, k, self.stride, pad)?, residual);
        }
        let y = bias_prelu(&pad.apply(x)?.conv2d(&self.weight, 0, self.stride, 1, 1)?, &self.params)?;
        match residual {
            Some(r) => y + r,
            None => Ok(y),
        }
    }
}

/// The `[N, C * k * k, OH, OW]` columns of a `k x k` convolution with
/// `stride` and zero padding `pad` over `x` `[N, C, H, W]` (CPU, f32): row
/// `(c * k + ky) * k + kx` holds input channel `c` at offset `(ky, kx)` of
/// every output position, the order of a `[O, C, k, k]` weight's columns.
fn im2col(x: &Tensor, k: usize, stride: usize, pad: Padding2d) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (hp, wp) = (h + pad.top + pad.bottom, w + pad.left + pad.right);
    if hp < k || wp < k || stride == 0 {
        candle_core::bail!("im2col: input {h}x{w} too small for kernel {k}x{k}");
    }
    let (oh, ow) = ((hp - k) / stride + 1, (wp - k) / stride + 1);
    let data = x.flatten_all()?.to_vec1::<f32>()?;
    let mut cols = vec![0f32; n * c * k * k * oh * ow];
    for (plane, src) in data.chunks_exact(h * w).enumerate() {
        for ky in 0..k {
            for kx in 0..k {
                let row = (plane * k + ky) * k + kx;
                let dst = &mut cols[row * oh * ow..(row + 1) * oh * ow];
                // Output columns whose input column `ox * stride + kx - left`
                // lies in the row: `[first, end)`.
                let first = pad.left.saturating_sub(kx).div_ceil(stride).min(ow);
                let end = (w + pad.left).saturating_sub(kx).div_ceil(stride).clamp(first, ow);
                if first == end {
                    continue;
                }
                for (oy, d) in dst.chunks_exact_mut(ow).enumerate() {
                    let Some(iy) = (oy * stride + ky).checked_sub(pad.top).filter(|&iy| iy < h) else { continue };
                    let line = &src[iy * w..(iy + 1) * w];
                    let start = first * stride + kx - pad.left;
                    for (v, x) in d[first..end].iter_mut().zip(line[start..].iter().step_by(stride)) {
                        *v = *x;
                    }
                }
            }
        }
    }
    Tensor::from_vec(cols, (n, c * k * k, oh, ow), x.device())
}

/// One inverted-residual bottleneck: 1x1 expand + PReLU, 3x3 depthwise +
/// PReLU, 1x1 linear projection, identity shortcut when shapes allow.
#[derive(Debug, Clone)]
struct Bottleneck {
    expand: Conv,
    dw: DepthwiseConv2d,
    project: Conv,
    residual: bool,
}

impl Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mid = self.dw.forward(&self.expand.forward(x)?)?;
        self.project.forward_add(&mid, self.residual.then_some(x))
    }
}

fn load_dw(vb: VarBuilder, c: usize, k: usize, stride: usize, same: bool, with_prelu: bool) -> Result<DepthwiseConv2d> {
    let weight = vb.get((c, 1, k, k), "weight")?;
    let bias = vb.get(c, "bias")?;
    let alpha = if with_prelu { Some(vb.get(c, "alpha")?) } else { None };
    DepthwiseConv2d::new(weight, bias, alpha, stride, same)
}

/// The MobileFaceNet network. Input `[N, 3, 112, 112]` f32 (normalised),
/// output `[N, 192]` raw (not normalised) embeddings.
#[derive(Debug, Clone)]
pub struct MobileFaceNet {
    stem_conv: Conv,
    stem_dw: DepthwiseConv2d,
    stem_project: Conv,
    blocks: Vec<Bottleneck>,
    head_conv: Conv,
    head_gdc: DepthwiseConv2d,
    head_logits: Conv,
    head_embed: Conv,
}

impl MobileFaceNet {
    /// Loads the weights: `stem.{conv,dw,project}`, `blocks.{i}.{expand,dw,project}`,
    /// `head.{conv,gdc,logits,embed}`, each with `weight`, `bias` and (where a
    /// PReLU follows) `alpha`.
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let s = vb.pp("stem");
        let stem_conv = Conv::load(s.pp("conv"), 3, 64, 3, 2, true, true)?;
        let stem_dw = load_dw(s.pp("dw"), 64, 3, 1, true, true)?;
        let stem_project = Conv::load(s.pp("project"), 64, 64, 1, 1, true, false)?;
        let mut blocks = Vec::new();
        let mut cin = 64;
        for &(t, c, n, stride) in STAGES.iter() {
            for i in 0..n {
                let b = vb.pp("blocks").pp(blocks.len());
                let stride = if i == 0 { stride } else { 1 };
                let mid = cin * t;
                blocks.push(Bottleneck {
                    expand: Conv::load(b.pp("expand"), cin, mid, 1, 1, true, true)?,
                    dw: load_dw(b.pp("dw"), mid, 3, stride, true, true)?,
                    project: Conv::load(b.pp("project"), mid, c, 1, 1, true, false)?,
                    residual: stride == 1 && cin == c,
                });
                cin = c;
            }
        }
        let h = vb.pp("head");
        Ok(Self {
            stem_conv,
            stem_dw,
            stem_project,
            blocks,
            head_conv: Conv::load(h.pp("conv"), cin, 512, 1, 1, true, true)?,
            head_gdc: load_dw(h.pp("gdc"), 512, 7, 1, false, false)?,
            head_logits: Conv::load(h.pp("logits"), 512, 512, 1, 1, false, false)?,
            head_embed: Conv::load(h.pp("embed"), 512, EMBEDDING_DIM, 1, 1, true, false)?,
        })
    }
}

impl Module for MobileFaceNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != 3 || h != INPUT_SIZE || w != INPUT_SIZE {
            candle_core::bail!("MobileFaceNet expects [N, 3, 112, 112], got {:?}", x.dims());
        }
        let mut y = self.stem_project.forward(&self.stem_dw.forward(&self.stem_conv.forward(x)?)?)?;
        for b in &self.blocks {
            y = b.forward(&y)?;
        }
        let y = self.head_gdc.forward(&self.head_conv.forward(&y)?)?;
        let y = self.head_embed.forward(&self.head_logits.forward(&y)?)?;
        y.reshape((n, EMBEDDING_DIM))
    }
}

/// Converts RGB chips (112x112) to the network input `[N, 3, 112, 112]`,
/// `(x - 127.5) / 128`.
pub fn chips_to_tensor(chips: &[image::RgbImage], device: &candle_core::Device) -> Result<Tensor> {
    crate::recognizer::chips_to_nchw(chips, INPUT_SIZE as u32, |v, _c| (v - 127.5) / 128.0, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `im2col` columns times the flattened weight equal candle's
    /// convolution of the padded input, for both strides, odd and even
    /// sizes, and symmetric, asymmetric and no padding.
    #[test]
    fn im2col_matches_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for &(h, w, k, stride) in &[(9, 8, 3, 1), (9, 8, 3, 2), (112, 112, 3, 2), (7, 7, 3, 2), (6, 11, 5, 3), (4, 4, 1, 1)] {
            let pads = [Padding2d::tf_same(h, w, k, stride), Padding2d::VALID, Padding2d { top: 2, bottom: 0, left: 1, right: 2 }];
            for pad in pads {
                let x = Tensor::randn(0f32, 1., (2, 3, h, w), &dev)?;
                let wt = Tensor::randn(0f32, 1., (4, 3, k, k), &dev)?;
                let want = pad.apply(&x)?.conv2d(&wt, 0, stride, 1, 1)?;
                let (_, _, oh, ow) = want.dims4()?;
                let cols = im2col(&x, k, stride, pad)?;
                let flat = wt.reshape((4, 3 * k * k))?;
                for i in 0..2 {
                    let got = flat.matmul(&cols.get(i)?.reshape((3 * k * k, oh * ow))?)?.reshape((4, oh, ow))?;
                    let diff = (got - want.get(i)?)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                    assert!(diff < 1e-4, "{:?}: max diff {diff}", (h, w, k, stride, pad));
                }
            }
        }
        Ok(())
    }
}
