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
/// optional PReLU.
#[derive(Debug, Clone)]
struct Conv {
    weight: Tensor,        // [O, I, k, k]
    weight_2d: Tensor,     // [O, I] for 1x1 layers
    params: Tensor,        // [1 or 2, O]: bias, then PReLU slope
    stride: usize,
    same: bool,
}

impl Conv {
    fn load(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize, same: bool, with_prelu: bool) -> Result<Self> {
        let weight = vb.get((cout, cin, k, k), "weight")?.to_dtype(DType::F32)?;
        let weight_2d = weight.reshape((cout, cin * k * k))?;
        let bias = vb.get(cout, "bias")?.to_dtype(DType::F32)?;
        let params = if with_prelu {
            Tensor::stack(&[bias, vb.get(cout, "alpha")?.to_dtype(DType::F32)?], 0)?
        } else {
            bias.unsqueeze(0)?
        };
        Ok(Self { weight, weight_2d, params, stride, same })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let (cout, _, k, _) = self.weight.dims4()?;
        let y = if k == 1 && self.stride == 1 {
            // A 1x1 convolution is a matrix product over the channel axis.
            let x3 = x.reshape((n, c, h * w))?;
            if n == 1 {
                self.weight_2d.matmul(&x3.squeeze(0)?)?.reshape((1, cout, h, w))?
            } else {
                let ys = (0..n).map(|i| self.weight_2d.matmul(&x3.get(i)?)).collect::<Result<Vec<_>>>()?;
                Tensor::stack(&ys, 0)?.reshape((n, cout, h, w))?
            }
        } else {
            let pad = if self.same { Padding2d::tf_same(h, w, k, self.stride) } else { Padding2d::VALID };
            pad.apply(x)?.conv2d(&self.weight, 0, self.stride, 1, 1)?
        };
        bias_prelu(&y, &self.params)
    }
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
        let y = self.project.forward(&self.dw.forward(&self.expand.forward(x)?)?)?;
        if self.residual {
            y + x
        } else {
            Ok(y)
        }
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
