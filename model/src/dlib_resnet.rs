//! dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1`) as
//! ported to tfjs by face-api.js: 150x150 RGB input normalised
//! `(x - mean_rgb) / 255`, 128-d output.
//!
//! Follows face-api's `FaceRecognitionNet` exactly (it is our parity
//! reference): every convolution is followed by a per-channel affine "scale"
//! layer (folded into the convolution at load time); down-sampling residual
//! blocks add a 2x2 average-pooled, zero-channel-padded shortcut, and pad the
//! convolution branch with a zero row/column (bottom/right) when its spatial
//! size falls one short of the shortcut's. Weights come from
//! `model/weights/dlib_resnet.safetensors` (`scripts/weights/dlib_resnet.py`):
//! tensors named like face-api's (`conv64_down.conv1.conv.filters`, ...),
//! optionally uint8-quantised with a `<name>.quant` = `[scale, min]` companion.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Embedding dimension.
pub const EMBEDDING_DIM: usize = 128;
/// Input chip side in pixels.
pub const INPUT_SIZE: usize = 150;
/// Per-channel RGB mean subtracted before dividing by 255 (face-api).
pub const MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];

/// Loads tensor `name`, dequantising `q * scale + min` when `name.quant` exists.
fn get_param(vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Tensor> {
    let t = vb.get(shape, name)?.to_dtype(DType::F32)?;
    let qname = format!("{name}.quant");
    if vb.contains_tensor(&qname) {
        let q = vb.get(2, &qname)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        t.affine(q[0] as f64, q[1] as f64)
    } else {
        Ok(t)
    }
}

/// Convolution + folded scale layer.
#[derive(Debug, Clone)]
struct ConvScale {
    weight: Tensor, // [O, I, k, k], scale folded in
    bias: Tensor,   // [1, O, 1, 1]
    stride: usize,
    padding: usize,
}

impl ConvScale {
    /// `vb` points at a face-api ConvLayer (`conv.filters`, `conv.bias`,
    /// `scale.weights`, `scale.biases`).
    fn load(vb: &VarBuilder, cin: usize, cout: usize, k: usize, stride: usize, padding: usize) -> Result<Self> {
        let w = get_param(vb, &[cout, cin, k, k], "conv.filters")?;
        let b = get_param(vb, &[cout], "conv.bias")?;
        let s = get_param(vb, &[cout], "scale.weights")?;
        let sb = get_param(vb, &[cout], "scale.biases")?;
        // (conv(x, w) + b) * s + sb == conv(x, w * s) + (b * s + sb)
        let weight = w.broadcast_mul(&s.reshape((cout, 1, 1, 1))?)?.contiguous()?;
        let bias = ((b * &s)? + sb)?.reshape((1, cout, 1, 1))?;
        Ok(Self { weight, bias, stride, padding })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?.broadcast_add(&self.bias)
    }
}

/// A residual block (two 3x3 convolutions); `down` halves the resolution.
#[derive(Debug, Clone)]
struct Residual {
    conv1: ConvScale,
    conv2: ConvScale,
    down: bool,
}

impl Residual {
    fn load(vb: VarBuilder, cin: usize, cout: usize, down: bool) -> Result<Self> {
        // face-api: the first conv of a down block is "valid" stride 2, else "same" stride 1.
        let conv1 = if down {
            ConvScale::load(&vb.pp("conv1"), cin, cout, 3, 2, 0)?
        } else {
            ConvScale::load(&vb.pp("conv1"), cin, cout, 3, 1, 1)?
        };
        let conv2 = ConvScale::load(&vb.pp("conv2"), cout, cout, 3, 1, 1)?;
        Ok(Self { conv1, conv2, down })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut out = self.conv2.forward(&self.conv1.forward(x)?.relu()?)?;
        if !self.down {
            return (out + x)?.relu();
        }
        let pooled = x.avg_pool2d_with_stride((2, 2), (2, 2))?;
        let (_, pc, ph, pw) = pooled.dims4()?;
        let (_, oc, oh, ow) = out.dims4()?;
        if (oh, ow) != (ph, pw) {
            out = out.pad_with_zeros(2, 0, ph.saturating_sub(oh))?.pad_with_zeros(3, 0, pw.saturating_sub(ow))?;
        }
        let pooled = if pc != oc { pooled.pad_with_zeros(1, 0, oc - pc)? } else { pooled };
        (pooled + out)?.relu()
    }
}

/// The dlib ResNet. Input `[N, 3, 150, 150]` f32 (normalised), output
/// `[N, 128]` raw embeddings.
#[derive(Debug, Clone)]
pub struct DlibResnet {
    stem: ConvScale,
    blocks: Vec<Residual>,
    fc: Tensor, // [256, 128]
}

impl DlibResnet {
    /// Loads the weights (face-api names with `/` replaced by `.`).
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let stem = ConvScale::load(&vb.pp("conv32_down"), 3, 32, 7, 2, 0)?;
        let plan: [(&str, usize, usize, bool); 14] = [
            ("conv32_1", 32, 32, false),
            ("conv32_2", 32, 32, false),
            ("conv32_3", 32, 32, false),
            ("conv64_down", 32, 64, true),
            ("conv64_1", 64, 64, false),
            ("conv64_2", 64, 64, false),
            ("conv64_3", 64, 64, false),
            ("conv128_down", 64, 128, true),
            ("conv128_1", 128, 128, false),
            ("conv128_2", 128, 128, false),
            ("conv256_down", 128, 256, true),
            ("conv256_1", 256, 256, false),
            ("conv256_2", 256, 256, false),
            ("conv256_down_out", 256, 256, true),
        ];
        let blocks = plan
            .iter()
            .map(|&(name, cin, cout, down)| Residual::load(vb.pp(name), cin, cout, down))
            .collect::<Result<Vec<_>>>()?;
        let fc = get_param(&vb, &[256, EMBEDDING_DIM], "fc")?;
        Ok(Self { stem, blocks, fc })
    }
}

impl Module for DlibResnet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h != INPUT_SIZE || w != INPUT_SIZE {
            candle_core::bail!("dlib ResNet expects [N, 3, 150, 150], got {:?}", x.dims());
        }
        let mut y = self.stem.forward(x)?.relu()?.max_pool2d_with_stride((3, 3), (2, 2))?;
        for b in &self.blocks {
            y = b.forward(&y)?;
        }
        y.mean((2, 3))?.matmul(&self.fc)
    }
}

/// Converts RGB chips (150x150) to the network input `[N, 3, 150, 150]`,
/// `(x - MEAN_RGB[c]) / 255`.
pub fn chips_to_tensor(chips: &[image::RgbImage], device: &Device) -> Result<Tensor> {
    crate::recognizer::chips_to_nchw(chips, INPUT_SIZE as u32, |v, c| (v - MEAN_RGB[c]) / 255.0, device)
}
