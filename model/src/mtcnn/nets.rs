//! The three MTCNN networks (P-Net, R-Net, O-Net), laid out like
//! facenet-pytorch's `PNet` / `RNet` / `ONet` so that its state-dict names
//! load unchanged (`pnet.conv1.weight`, `rnet.dense4.bias`, ...). They run
//! on NHWC activations (see [`super::layers`]).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{max_pool_ceil, softmax2, Act, Conv, Dense};

/// Output of R-Net for one crop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RnetOut {
    /// Face probability.
    pub score: f32,
    /// Box regression `[dx1, dy1, dx2, dy2]`.
    pub reg: [f32; 4],
}

/// Output of O-Net for one crop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnetOut {
    /// Face probability.
    pub score: f32,
    /// Box regression `[dx1, dy1, dx2, dy2]`.
    pub reg: [f32; 4],
    /// Landmarks relative to the box: 5 x, then 5 y.
    pub points: [f32; 10],
}

fn conv(vb: &VarBuilder, name: &str, prelu: Option<&str>, cin: usize, cout: usize, k: usize) -> Result<Conv> {
    Conv::load(vb.pp(name), prelu.map(|p| vb.pp(p)), cin, cout, k)
}

/// Proposal network: fully convolutional, run on every pyramid level.
#[derive(Debug, Clone)]
pub struct PNet {
    conv1: Conv,
    conv2: Conv,
    conv3: Conv,
    /// conv4_1 (2 face/non-face logits) and conv4_2 (4 box offsets) fused
    /// into one 1x1 convolution with 6 outputs: logits first.
    conv4: Conv,
}

impl PNet {
    /// Loads `conv1..conv4_2`, `prelu1..3` from `vb` (rooted at `pnet`).
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let w = Tensor::cat(&[vb.get((2, 32, 1, 1), "conv4_1.weight")?, vb.get((4, 32, 1, 1), "conv4_2.weight")?], 0)?;
        let mut bias = vb.get(2, "conv4_1.bias")?.to_vec1::<f32>()?;
        bias.extend(vb.get(4, "conv4_2.bias")?.to_vec1::<f32>()?);
        Ok(Self {
            conv1: conv(&vb, "conv1", Some("prelu1"), 3, 10, 3)?,
            conv2: conv(&vb, "conv2", Some("prelu2"), 10, 16, 3)?,
            conv3: conv(&vb, "conv3", Some("prelu3"), 16, 32, 3)?,
            conv4: Conv::from_parts(w, bias, None)?,
        })
    }

    /// `x`: one normalised image (NHWC, `n == 1`, h, w >= 12). Returns the
    /// `(1, h', w', 6)` map: channels 0..2 face/non-face logits (not
    /// softmaxed), 2..6 box regression. `integers`: see [`Conv::forward`].
    pub fn forward(&self, x: &Act, integers: bool) -> Result<Act> {
        let x = self.conv1.forward(x, integers)?;
        let x = max_pool_ceil(&x, 2, 2);
        let x = self.conv2.forward(&x, integers)?;
        let x = self.conv3.forward(&x, integers)?;
        self.conv4.forward(&x, integers)
    }
}

/// Refinement network on 24x24 crops.
#[derive(Debug, Clone)]
pub struct RNet {
    conv1: Conv,
    conv2: Conv,
    conv3: Conv,
    dense4: Dense,
    dense5_1: Dense,
    dense5_2: Dense,
}

impl RNet {
    /// Loads the layers from `vb` (rooted at `rnet`).
    pub fn load(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv(&vb, "conv1", Some("prelu1"), 3, 28, 3)?,
            conv2: conv(&vb, "conv2", Some("prelu2"), 28, 48, 3)?,
            conv3: conv(&vb, "conv3", Some("prelu3"), 48, 64, 2)?,
            dense4: Dense::load_after_conv(vb.pp("dense4"), Some(vb.pp("prelu4")), (3, 3, 64), 128)?,
            dense5_1: Dense::load(vb.pp("dense5_1"), None, 128, 2)?,
            dense5_2: Dense::load(vb.pp("dense5_2"), None, 128, 4)?,
        })
    }

    /// Values per crop of [`RNet::features`].
    pub const FEATURES: usize = 3 * 3 * 64;

    /// The convolutional part: `x`, `n` normalised 24x24 crops (NHWC), to
    /// [`RNet::FEATURES`] values per crop, in order. `integers`: see
    /// [`Conv::forward`].
    pub fn features(&self, x: &Act, integers: bool) -> Result<Vec<f32>> {
        let x = self.conv1.forward(x, integers)?;
        let x = max_pool_ceil(&x, 3, 2);
        let x = self.conv2.forward(&x, integers)?;
        let x = max_pool_ceil(&x, 3, 2);
        Ok(self.conv3.forward(&x, integers)?.data)
    }

    /// The dense part, on the [`RNet::features`] of `n` crops (taken in
    /// one product however many passes made them: its weights are read
    /// once).
    pub fn head(&self, features: Vec<f32>, n: usize, integers: bool) -> Result<Vec<RnetOut>> {
        assert_eq!(features.len(), n * Self::FEATURES, "RNet: features of {n} crops");
        let x = self.dense4.forward(features, n, integers)?;
        let logits = self.dense5_1.forward(x.clone(), n, integers)?;
        let reg = self.dense5_2.forward(x, n, integers)?;
        Ok((0..n)
            .map(|i| RnetOut {
                score: softmax2(logits[2 * i], logits[2 * i + 1]),
                reg: [reg[4 * i], reg[4 * i + 1], reg[4 * i + 2], reg[4 * i + 3]],
            })
            .collect())
    }
}

/// Output network on 48x48 crops, with landmarks.
#[derive(Debug, Clone)]
pub struct ONet {
    conv1: Conv,
    conv2: Conv,
    conv3: Conv,
    conv4: Conv,
    dense5: Dense,
    dense6_1: Dense,
    dense6_2: Dense,
    dense6_3: Dense,
}

impl ONet {
    /// Loads the layers from `vb` (rooted at `onet`).
    pub fn load(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv(&vb, "conv1", Some("prelu1"), 3, 32, 3)?,
            conv2: conv(&vb, "conv2", Some("prelu2"), 32, 64, 3)?,
            conv3: conv(&vb, "conv3", Some("prelu3"), 64, 64, 3)?,
            conv4: conv(&vb, "conv4", Some("prelu4"), 64, 128, 2)?,
            dense5: Dense::load_after_conv(vb.pp("dense5"), Some(vb.pp("prelu5")), (3, 3, 128), 256)?,
            dense6_1: Dense::load(vb.pp("dense6_1"), None, 256, 2)?,
            dense6_2: Dense::load(vb.pp("dense6_2"), None, 256, 4)?,
            dense6_3: Dense::load(vb.pp("dense6_3"), None, 256, 10)?,
        })
    }

    /// Values per crop of [`ONet::features`].
    pub const FEATURES: usize = 3 * 3 * 128;

    /// The convolutional part: `x`, `n` normalised 48x48 crops (NHWC), to
    /// [`ONet::FEATURES`] values per crop, in order. `integers`: see
    /// [`Conv::forward`].
    pub fn features(&self, x: &Act, integers: bool) -> Result<Vec<f32>> {
        let x = self.conv1.forward(x, integers)?;
        let x = max_pool_ceil(&x, 3, 2);
        let x = self.conv2.forward(&x, integers)?;
        let x = max_pool_ceil(&x, 3, 2);
        let x = self.conv3.forward(&x, integers)?;
        let x = max_pool_ceil(&x, 2, 2);
        Ok(self.conv4.forward(&x, integers)?.data)
    }

    /// The dense part, on the [`ONet::features`] of `n` crops (taken in
    /// one product however many passes made them: dense5's 1.2 MB of
    /// weights are read once, not once per pass).
    pub fn head(&self, features: Vec<f32>, n: usize, integers: bool) -> Result<Vec<OnetOut>> {
        assert_eq!(features.len(), n * Self::FEATURES, "ONet: features of {n} crops");
        let x = self.dense5.forward(features, n, integers)?;
        let logits = self.dense6_1.forward(x.clone(), n, integers)?;
        let reg = self.dense6_2.forward(x.clone(), n, integers)?;
        let pts = self.dense6_3.forward(x, n, integers)?;
        Ok((0..n)
            .map(|i| {
                let mut points = [0f32; 10];
                points.copy_from_slice(&pts[10 * i..10 * i + 10]);
                OnetOut {
                    score: softmax2(logits[2 * i], logits[2 * i + 1]),
                    reg: [reg[4 * i], reg[4 * i + 1], reg[4 * i + 2], reg[4 * i + 3]],
                    points,
                }
            })
            .collect())
    }
}
