//! The few layer kinds MTCNN needs, on NHWC activations held in plain
//! vectors: valid convolutions as a cache-friendly im2col followed by one
//! candle matmul (gemm), with bias and PReLU fused into a single pass;
//! ceil-mode max pooling; dense layers.
//!
//! candle's own CPU `conv2d` spends most of its time re-laying out the input
//! for these small-channel layers (measured: ~4x slower end to end), hence
//! the NHWC path; the arithmetic itself is candle's matmul.

use candle_core::{Result, Storage, Tensor};
use candle_nn::VarBuilder;

/// Activations of `n` images, NHWC, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Act {
    /// Batch size.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// `n * h * w * c` values.
    pub data: Vec<f32>,
}

/// Rows processed per step by [`bias_prelu_into`]: bias and slopes are tiled
/// this many times so that the inner loop runs over one long flat slice
/// (vectorisable whatever the channel count).
const TILE_ROWS: usize = 16;

/// Per-channel bias and optional PReLU slopes, tiled [`TILE_ROWS`] times.
#[derive(Debug, Clone)]
struct Epilogue {
    cols: usize,
    bias: Vec<f32>,
    /// `None`: no activation.
    slope: Option<Vec<f32>>,
}

impl Epilogue {
    fn new(bias: Vec<f32>, slope: Option<Vec<f32>>) -> Self {
        let tile = |v: &[f32]| v.repeat(TILE_ROWS);
        Self { cols: bias.len(), bias: tile(&bias), slope: slope.as_deref().map(tile) }
    }

    /// `dst = src + bias` per column, then PReLU (`x` where `x > 0`, else
    /// `slope * x`) if there are slopes.
    fn apply(&self, src: &[f32], dst: &mut [f32]) {
        bias_prelu_rows(TILE_ROWS * self.cols, &self.bias, self.slope.as_deref(), src, dst);
    }
}

/// [`Epilogue::apply`]'s loop, compiled for the best SIMD level available.
#[multiversion::multiversion(targets = "simd")]
fn bias_prelu_rows(step: usize, bias: &[f32], slope: Option<&[f32]>, src: &[f32], dst: &mut [f32]) {
    for (d, s) in dst.chunks_mut(step).zip(src.chunks(step)) {
        match slope {
            Some(slope) => {
                for ((d, s), (b, a)) in d.iter_mut().zip(s).zip(bias.iter().zip(slope)) {
                    let x = s + b;
                    // Branch-free (vectorises); equals `x > 0 ? x : a * x` exactly.
                    *d = x.max(0.0) + x.min(0.0) * a;
                }
            }
            None => {
                for ((d, s), b) in d.iter_mut().zip(s).zip(bias) {
                    *d = s + b;
                }
            }
        }
    }
}

/// `x (rows x k) @ w (k x cols)` with candle, then the epilogue, returned as
/// a vector.
fn matmul(x: Vec<f32>, rows: usize, w: &Tensor, epi: &Epilogue) -> Result<Vec<f32>> {
    let (k, cols) = w.dims2()?;
    let y = Tensor::from_vec(x, (rows, k), w.device())?.matmul(w)?;
    let mut out = vec![0f32; rows * cols];
    {
        let (storage, layout) = y.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            epi.apply(&cpu.as_slice::<f32>()?[start..end], &mut out);
            return Ok(out);
        }
    }
    epi.apply(&y.flatten_all()?.to_vec1::<f32>()?, &mut out);
    Ok(out)
}

/// Loads a PReLU's slopes (`<prefix>.weight`, one per channel).
fn load_slope(vb: VarBuilder, channels: usize) -> Result<Vec<f32>> {
    vb.get(channels, "weight")?.to_vec1::<f32>()
}

/// A stride-1, unpadded `k x k` convolution (PyTorch `Conv2d`, weights OIHW)
/// with bias and an optional PReLU after it.
#[derive(Debug, Clone)]
pub struct Conv {
    k: usize,
    cin: usize,
    cout: usize,
    /// `(k * k * cin, cout)`, rows ordered (kh, kw, cin) like the im2col columns.
    weight: Tensor,
    epilogue: Epilogue,
}

impl Conv {
    /// Loads `<conv>.weight` `(cout, cin, k, k)`, `<conv>.bias` and, if
    /// `prelu` is given, `<prelu>.weight`.
    pub fn load(conv: VarBuilder, prelu: Option<VarBuilder>, cin: usize, cout: usize, k: usize) -> Result<Self> {
        let w = conv.get((cout, cin, k, k), "weight")?;
        let bias = conv.get(cout, "bias")?.to_vec1::<f32>()?;
        Self::from_parts(w, bias, prelu.map(|vb| load_slope(vb, cout)).transpose()?)
    }

    /// Builds the layer from an OIHW weight tensor, bias and optional slopes.
    pub fn from_parts(w: Tensor, bias: Vec<f32>, slope: Option<Vec<f32>>) -> Result<Self> {
        let (cout, cin, k, _) = w.dims4()?;
        let weight = w.permute((2, 3, 1, 0))?.contiguous()?.reshape((k * k * cin, cout))?;
        Ok(Self { k, cin, cout, weight, epilogue: Epilogue::new(bias, slope) })
    }

    /// Applies the layer to `x` (needs `x.h, x.w >= k` and `x.c == cin`).
    pub fn forward(&self, x: &Act) -> Result<Act> {
        let k = self.k;
        if x.c != self.cin || x.h < k || x.w < k {
            candle_core::bail!("conv {k}x{k}/{}: bad input {}x{}x{}", self.cin, x.h, x.w, x.c);
        }
        let (oh, ow) = (x.h - k + 1, x.w - k + 1);
        let rows = x.n * oh * ow;
        let cols = if k == 1 {
            x.data.clone()
        } else {
            let seg = k * x.c; // one kernel row of one output pixel: contiguous in NHWC
            let mut cols = Vec::with_capacity(rows * k * seg);
            for n in 0..x.n {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for kh in 0..k {
                            let src = ((n * x.h + oy + kh) * x.w + ox) * x.c;
                            cols.extend_from_slice(&x.data[src..src + seg]);
                        }
                    }
                }
            }
            cols
        };
        let data = matmul(cols, rows, &self.weight, &self.epilogue)?;
        Ok(Act { n: x.n, h: oh, w: ow, c: self.cout, data })
    }
}

/// `nn.MaxPool2d(k, s, ceil_mode=True)` without padding: the last window in
/// each direction may be partial.
#[multiversion::multiversion(targets = "simd")]
pub fn max_pool_ceil(x: &Act, k: usize, s: usize) -> Act {
    let out = |len: usize| len.saturating_sub(k).div_ceil(s) + 1;
    let (oh, ow) = (out(x.h), out(x.w));
    let c = x.c;
    let mut data = vec![f32::NEG_INFINITY; x.n * oh * ow * c];
    for n in 0..x.n {
        for oy in 0..oh {
            let (y0, y1) = (oy * s, (oy * s + k).min(x.h));
            for ox in 0..ow {
                let (x0, x1) = (ox * s, (ox * s + k).min(x.w));
                let o = ((n * oh + oy) * ow + ox) * c;
                let acc = &mut data[o..o + c];
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let i = ((n * x.h + iy) * x.w + ix) * c;
                        for (a, v) in acc.iter_mut().zip(&x.data[i..i + c]) {
                            *a = a.max(*v);
                        }
                    }
                }
            }
        }
    }
    Act { n: x.n, h: oh, w: ow, c, data }
}

/// A dense layer (PyTorch `Linear`) with an optional PReLU after it.
#[derive(Debug, Clone)]
pub struct Dense {
    /// `(in, out)`.
    weight: Tensor,
    epilogue: Epilogue,
}

impl Dense {
    /// Loads `<dense>.weight` `(out, in)`, `<dense>.bias` and, if `prelu` is
    /// given, `<prelu>.weight`.
    pub fn load(dense: VarBuilder, prelu: Option<VarBuilder>, fan_in: usize, fan_out: usize) -> Result<Self> {
        let w = dense.get((fan_out, fan_in), "weight")?;
        let bias = dense.get(fan_out, "bias")?.to_vec1::<f32>()?;
        let slope = prelu.map(|vb| load_slope(vb, fan_out)).transpose()?;
        Ok(Self { weight: w.t()?.contiguous()?, epilogue: Epilogue::new(bias, slope) })
    }

    /// Like [`Dense::load`] for the first dense layer after the last
    /// convolution: PyTorch flattens that `(C, H, W)` map in (W, H, C) order
    /// (`permute(0, 3, 2, 1)`), the NHWC activations here are (H, W, C), so
    /// the weight columns are reordered once at load time.
    pub fn load_after_conv(
        dense: VarBuilder,
        prelu: Option<VarBuilder>,
        (h, w, c): (usize, usize, usize),
        fan_out: usize,
    ) -> Result<Self> {
        let mut layer = Self::load(dense, prelu, h * w * c, fan_out)?;
        // weight is (in = w*h*c in (W, H, C) order, out): reorder rows to (H, W, C).
        layer.weight = layer.weight.reshape((w, h, c, fan_out))?.permute((1, 0, 2, 3))?.contiguous()?.reshape((h * w * c, fan_out))?;
        Ok(layer)
    }

    /// Applies the layer to `n` rows of `x` (each `in` long).
    pub fn forward(&self, x: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        matmul(x, n, &self.weight, &self.epilogue)
    }
}

/// Probability of class 1 of a two-way softmax over logits `(a, b)`.
pub fn softmax2(a: f32, b: f32) -> f32 {
    let m = a.max(b);
    let (ea, eb) = ((a - m).exp(), (b - m).exp());
    eb / (ea + eb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn conv_matches_a_naive_convolution() -> Result<()> {
        let dev = Device::Cpu;
        let (cin, cout, k, h, w) = (3, 4, 3, 5, 6);
        let wv: Vec<f32> = (0..cout * cin * k * k).map(|i| ((i * 7 % 11) as f32 - 5.0) / 7.0).collect();
        let xv: Vec<f32> = (0..h * w * cin).map(|i| ((i * 5 % 13) as f32 - 6.0) / 5.0).collect();
        let bias = vec![0.5, -0.25, 0.0, 1.0];
        let slope = vec![0.1, 0.2, 0.3, 0.4];
        let conv = Conv::from_parts(Tensor::from_vec(wv.clone(), (cout, cin, k, k), &dev)?, bias.clone(), Some(slope.clone()))?;
        let y = conv.forward(&Act { n: 1, h, w, c: cin, data: xv.clone() })?;
        assert_eq!((y.h, y.w, y.c), (3, 4, 4));
        for oy in 0..3 {
            for ox in 0..4 {
                for co in 0..cout {
                    let mut s = bias[co];
                    for ci in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                s += wv[((co * cin + ci) * k + ky) * k + kx] * xv[((oy + ky) * w + ox + kx) * cin + ci];
                            }
                        }
                    }
                    let want = if s > 0.0 { s } else { s * slope[co] };
                    let got = y.data[(oy * 4 + ox) * cout + co];
                    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn ceil_mode_pooling_keeps_the_partial_window() {
        // 1x5 row, one channel: windows [0,2) [2,4) [4,5) with k=2, s=2.
        let x = Act { n: 1, h: 1, w: 5, c: 1, data: vec![1.0, -3.0, 2.0, 0.5, -7.0] };
        let y = max_pool_ceil(&x, 2, 2);
        assert_eq!((y.h, y.w), (1, 3));
        assert_eq!(y.data, vec![1.0, 2.0, -7.0]);
        // 3x3/2 on a 4-wide row: windows [0,3) [2,4)
        let x = Act { n: 1, h: 4, w: 1, c: 1, data: vec![0.0, 1.0, 5.0, 2.0] };
        assert_eq!(max_pool_ceil(&x, 3, 2).data, vec![5.0, 5.0]);
    }

    #[test]
    fn dense_after_conv_reorders_to_pytorch_flatten_order() -> Result<()> {
        let dev = Device::Cpu;
        // map (C=2, H=2, W=3); PyTorch flattens permute(0,3,2,1): index (w*H + h)*C + c
        let (c, h, w) = (2usize, 2usize, 3usize);
        let fan_in = c * h * w;
        let wt: Vec<f32> = (0..fan_in).map(|i| i as f32).collect(); // one output: picks index
        let vb = VarBuilder::from_tensors(
            [
                ("d.weight".to_string(), Tensor::from_vec(wt, (1, fan_in), &dev)?),
                ("d.bias".to_string(), Tensor::zeros(1, candle_core::DType::F32, &dev)?),
            ]
            .into_iter()
            .collect(),
            candle_core::DType::F32,
            &dev,
        );
        let dense = Dense::load_after_conv(vb.pp("d"), None, (h, w, c), 1)?;
        // one-hot NHWC input at (y=1, x=2, ch=1): PyTorch index (2*2 + 1)*2 + 1 = 11
        let mut x = vec![0f32; fan_in];
        x[(w + 2) * c + 1] = 1.0;
        assert_eq!(dense.forward(x, 1)?, vec![11.0]);
        Ok(())
    }
}
