//! The three MTCNN networks (P-Net, R-Net, O-Net) in candle, laid out like
//! facenet-pytorch's `PNet` / `RNet` / `ONet` so that its state-dict names
//! load unchanged (`pnet.conv1.weight`, `rnet.dense4.bias`, ...).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};

/// A PReLU with one slope per channel (dimension 1 of the input).
#[derive(Debug, Clone)]
struct PRelu {
    /// Slopes shaped to broadcast over dimension 1 (`(1, C, 1, 1)` or `(1, C)`).
    slope: Tensor,
}

impl PRelu {
    fn load(vb: VarBuilder, channels: usize, spatial: bool) -> Result<Self> {
        let w = vb.get(channels, "weight")?;
        let slope = if spatial { w.reshape((1, channels, 1, 1))? } else { w.reshape((1, channels))? };
        Ok(Self { slope })
    }
}

impl Module for PRelu {
    /// `x` where `x > 0`, `slope * x` elsewhere (exactly, like `nn.PReLU`).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.maximum(0f32)?.add(&x.minimum(0f32)?.broadcast_mul(&self.slope)?)
    }
}

fn conv(vb: VarBuilder, cin: usize, cout: usize, k: usize) -> Result<Conv2d> {
    candle_nn::conv2d(cin, cout, k, Conv2dConfig::default(), vb)
}

/// `nn.MaxPool2d(k, s, ceil_mode=True)` (no padding): the input is padded
/// on the bottom/right with -inf so that the last, partial window exists.
fn max_pool_ceil(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let out = |len: usize| (len.saturating_sub(k)).div_ceil(s) + 1;
    let (need_h, need_w) = ((out(h) - 1) * s + k, (out(w) - 1) * s + k);
    let mut x = x.clone();
    if need_h > h {
        let pad = Tensor::full(f32::NEG_INFINITY, (n, c, need_h - h, w), x.device())?;
        x = Tensor::cat(&[&x, &pad], 2)?;
    }
    if need_w > w {
        let pad = Tensor::full(f32::NEG_INFINITY, (n, c, need_h, need_w - w), x.device())?;
        x = Tensor::cat(&[&x, &pad], 3)?;
    }
    x.max_pool2d_with_stride(k, s)
}

/// R-/O-Net flatten: facenet-pytorch permutes NCHW to (N, W, H, C) before
/// flattening (a leftover of the Caffe/TensorFlow weight layout).
fn flatten_whc(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 3, 2, 1))?.contiguous()?.flatten_from(1)
}

/// Proposal network: fully convolutional, run on every pyramid level.
#[derive(Debug, Clone)]
pub struct PNet {
    conv1: Conv2d,
    prelu1: PRelu,
    conv2: Conv2d,
    prelu2: PRelu,
    conv3: Conv2d,
    prelu3: PRelu,
    /// conv4_1 (2 face/non-face logits) and conv4_2 (4 box offsets) fused
    /// into one 1x1 convolution with 6 outputs: logits first.
    conv4: Conv2d,
}

impl PNet {
    /// Loads `conv1..conv4_2`, `prelu1..3` from `vb` (rooted at `pnet`).
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let w = Tensor::cat(
            &[vb.get((2, 32, 1, 1), "conv4_1.weight")?, vb.get((4, 32, 1, 1), "conv4_2.weight")?],
            0,
        )?;
        let b = Tensor::cat(&[vb.get(2, "conv4_1.bias")?, vb.get(4, "conv4_2.bias")?], 0)?;
        Ok(Self {
            conv1: conv(vb.pp("conv1"), 3, 10, 3)?,
            prelu1: PRelu::load(vb.pp("prelu1"), 10, true)?,
            conv2: conv(vb.pp("conv2"), 10, 16, 3)?,
            prelu2: PRelu::load(vb.pp("prelu2"), 16, true)?,
            conv3: conv(vb.pp("conv3"), 16, 32, 3)?,
            prelu3: PRelu::load(vb.pp("prelu3"), 32, true)?,
            conv4: Conv2d::new(w, Some(b), Conv2dConfig::default()),
        })
    }

    /// `x`: `(1, 3, H, W)` normalised image, H, W >= 12. Returns
    /// `(1, 6, H', W')`: channels 0..2 are the face/non-face logits (not yet
    /// softmaxed), 2..6 the box regression.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.prelu1.forward(&self.conv1.forward(x)?)?;
        let x = max_pool_ceil(&x, 2, 2)?;
        let x = self.prelu2.forward(&self.conv2.forward(&x)?)?;
        let x = self.prelu3.forward(&self.conv3.forward(&x)?)?;
        self.conv4.forward(&x)
    }
}

/// Refinement network on 24x24 crops.
#[derive(Debug, Clone)]
pub struct RNet {
    conv1: Conv2d,
    prelu1: PRelu,
    conv2: Conv2d,
    prelu2: PRelu,
    conv3: Conv2d,
    prelu3: PRelu,
    dense4: Linear,
    prelu4: PRelu,
    dense5_1: Linear,
    dense5_2: Linear,
}

impl RNet {
    /// Loads the layers from `vb` (rooted at `rnet`).
    pub fn load(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv(vb.pp("conv1"), 3, 28, 3)?,
            prelu1: PRelu::load(vb.pp("prelu1"), 28, true)?,
            conv2: conv(vb.pp("conv2"), 28, 48, 3)?,
            prelu2: PRelu::load(vb.pp("prelu2"), 48, true)?,
            conv3: conv(vb.pp("conv3"), 48, 64, 2)?,
            prelu3: PRelu::load(vb.pp("prelu3"), 64, true)?,
            dense4: candle_nn::linear(576, 128, vb.pp("dense4"))?,
            prelu4: PRelu::load(vb.pp("prelu4"), 128, false)?,
            dense5_1: candle_nn::linear(128, 2, vb.pp("dense5_1"))?,
            dense5_2: candle_nn::linear(128, 4, vb.pp("dense5_2"))?,
        })
    }

    /// `x`: `(N, 3, 24, 24)`. Returns `(box regression (N, 4), face probability (N, 2))`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.prelu1.forward(&self.conv1.forward(x)?)?;
        let x = max_pool_ceil(&x, 3, 2)?;
        let x = self.prelu2.forward(&self.conv2.forward(&x)?)?;
        let x = max_pool_ceil(&x, 3, 2)?;
        let x = self.prelu3.forward(&self.conv3.forward(&x)?)?;
        let x = self.prelu4.forward(&self.dense4.forward(&flatten_whc(&x)?)?)?;
        let prob = candle_nn::ops::softmax_last_dim(&self.dense5_1.forward(&x)?)?;
        Ok((self.dense5_2.forward(&x)?, prob))
    }
}

/// Output network on 48x48 crops, with landmarks.
#[derive(Debug, Clone)]
pub struct ONet {
    conv1: Conv2d,
    prelu1: PRelu,
    conv2: Conv2d,
    prelu2: PRelu,
    conv3: Conv2d,
    prelu3: PRelu,
    conv4: Conv2d,
    prelu4: PRelu,
    dense5: Linear,
    prelu5: PRelu,
    dense6_1: Linear,
    dense6_2: Linear,
    dense6_3: Linear,
}

impl ONet {
    /// Loads the layers from `vb` (rooted at `onet`).
    pub fn load(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv(vb.pp("conv1"), 3, 32, 3)?,
            prelu1: PRelu::load(vb.pp("prelu1"), 32, true)?,
            conv2: conv(vb.pp("conv2"), 32, 64, 3)?,
            prelu2: PRelu::load(vb.pp("prelu2"), 64, true)?,
            conv3: conv(vb.pp("conv3"), 64, 64, 3)?,
            prelu3: PRelu::load(vb.pp("prelu3"), 64, true)?,
            conv4: conv(vb.pp("conv4"), 64, 128, 2)?,
            prelu4: PRelu::load(vb.pp("prelu4"), 128, true)?,
            dense5: candle_nn::linear(1152, 256, vb.pp("dense5"))?,
            prelu5: PRelu::load(vb.pp("prelu5"), 256, false)?,
            dense6_1: candle_nn::linear(256, 2, vb.pp("dense6_1"))?,
            dense6_2: candle_nn::linear(256, 4, vb.pp("dense6_2"))?,
            dense6_3: candle_nn::linear(256, 10, vb.pp("dense6_3"))?,
        })
    }

    /// `x`: `(N, 3, 48, 48)`. Returns `(box regression (N, 4), landmarks
    /// (N, 10): 5 x then 5 y, relative to the box, face probability (N, 2))`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let x = self.prelu1.forward(&self.conv1.forward(x)?)?;
        let x = max_pool_ceil(&x, 3, 2)?;
        let x = self.prelu2.forward(&self.conv2.forward(&x)?)?;
        let x = max_pool_ceil(&x, 3, 2)?;
        let x = self.prelu3.forward(&self.conv3.forward(&x)?)?;
        let x = max_pool_ceil(&x, 2, 2)?;
        let x = self.prelu4.forward(&self.conv4.forward(&x)?)?;
        let x = self.prelu5.forward(&self.dense5.forward(&flatten_whc(&x)?)?)?;
        let prob = candle_nn::ops::softmax_last_dim(&self.dense6_1.forward(&x)?)?;
        Ok((self.dense6_2.forward(&x)?, self.dense6_3.forward(&x)?, prob))
    }
}
