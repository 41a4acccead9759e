//! The few layer kinds MTCNN needs, on NHWC activations held in plain
//! vectors: valid convolutions with bias and PReLU fused in (on CPU a direct
//! kernel: in 16-bit integers where the level has one,
//! [`super::int16_conv`] (for 3x3 kernels over 16 or more channels in
//! F(2, 3) form along the rows), otherwise in f32, [`conv_direct`], or the
//! Winograd form of [`super::winograd`] for 3x3 kernels over many channels;
//! elsewhere im2col and one candle matmul); ceil-mode max pooling; dense
//! layers.
//!
//! candle's own CPU `conv2d` spends most of its time re-laying out the input
//! for these small-channel layers (measured: ~4x slower end to end), hence
//! the NHWC path.

use std::mem::MaybeUninit;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::int16_conv::Int16Conv;
use super::winograd::Winograd;
use crate::simd::{gemm_parallelism, madd, sgemm, simd_kernel, simd_level, Isa, SimdLevel};

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
    fn apply(&self, level: SimdLevel, src: &[f32], dst: &mut [f32]) {
        bias_prelu_rows(level, TILE_ROWS * self.cols, &self.bias, self.slope.as_deref(), src, dst);
    }

    /// The per-channel bias (one tile).
    fn bias(&self) -> &[f32] {
        &self.bias[..self.cols]
    }

    /// The per-channel slopes (one tile), if any.
    fn slope(&self) -> Option<&[f32]> {
        self.slope.as_deref().map(|s| &s[..self.cols])
    }

    /// [`Epilogue::apply`] with `src == dst`.
    fn apply_in_place(&self, level: SimdLevel, data: &mut [f32]) {
        bias_prelu_rows_in_place(level, TILE_ROWS * self.cols, &self.bias, self.slope.as_deref(), data);
    }
}

simd_kernel! {
/// [`Epilogue::apply`]'s loop, compiled per SIMD level.
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
}

simd_kernel! {
/// [`Epilogue::apply_in_place`]'s loop, compiled per SIMD level.
fn bias_prelu_rows_in_place(step: usize, bias: &[f32], slope: Option<&[f32]>, data: &mut [f32]) {
    for d in data.chunks_mut(step) {
        match slope {
            Some(slope) => {
                for (d, (b, a)) in d.iter_mut().zip(bias.iter().zip(slope)) {
                    let x = *d + b;
                    *d = x.max(0.0) + x.min(0.0) * a;
                }
            }
            None => {
                for (d, b) in d.iter_mut().zip(bias) {
                    *d += b;
                }
            }
        }
    }
}
}

/// `x (rows x k) @ w (k x cols)`, then the epilogue, returned as a vector:
/// [`sgemm`] on CPU (at the forced SIMD level), candle's matmul elsewhere.
fn matmul(x: Vec<f32>, rows: usize, w: &Weight, epi: &Epilogue) -> Result<Vec<f32>> {
    let (k, cols) = w.tensor.dims2()?;
    if let Some(wv) = &w.cpu {
        let level = simd_level();
        let mut out = vec![0f32; rows * cols];
        sgemm(level, rows, cols, k, &mut out, &x, wv, false, gemm_parallelism());
        epi.apply_in_place(level, &mut out);
        return Ok(out);
    }
    let y = Tensor::from_vec(x, (rows, k), w.tensor.device())?.matmul(&w.tensor)?;
    let mut out = vec![0f32; rows * cols];
    epi.apply(simd_level(), &y.flatten_all()?.to_device(&candle_core::Device::Cpu)?.to_vec1::<f32>()?, &mut out);
    Ok(out)
}

/// A `(k, cols)` weight matrix: the tensor, plus its values when on CPU.
#[derive(Debug, Clone)]
struct Weight {
    tensor: Tensor,
    cpu: Option<Vec<f32>>,
}

impl Weight {
    fn new(tensor: Tensor) -> Result<Self> {
        let tensor = tensor.contiguous()?;
        let cpu = if tensor.device().is_cpu() {
            Some(tensor.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        } else {
            None
        };
        Ok(Self { tensor, cpu })
    }
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
    weight: Weight,
    epilogue: Epilogue,
    /// The same weights, bias and slopes packed for [`conv_direct`] (CPU,
    /// when the layer has no Winograd form).
    packed: Option<Packed>,
    /// The same again rounded to 16-bit integers, run instead of `packed`
    /// or `winograd` where the level has an integer kernel (x86_64 CPU, see
    /// [`super::int16_conv`]).
    int16: Option<Int16Conv>,
    /// The Winograd form, used instead of `packed` for 3x3 kernels over
    /// at least [`WINOGRAD_MIN_CIN`] input channels (CPU, f32).
    winograd: Option<Winograd>,
}

/// Fewest input channels for which a 3x3 layer runs in its Winograd form
/// in f32: below it the 16 products are too short to repay the transforms
/// (measured on MTCNN: see the [`super::winograd`] module docs). Where an
/// integer kernel runs, the direct integer convolution is faster still.
const WINOGRAD_MIN_CIN: usize = 32;

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
        let weight = Weight::new(w.permute((2, 3, 1, 0))?.contiguous()?.reshape((k * k * cin, cout))?)?;
        let winograd = weight
            .cpu
            .as_ref()
            .filter(|_| k == 3 && cin >= WINOGRAD_MIN_CIN)
            .map(|wv| Winograd::new(wv, cin, cout, &bias, slope.as_deref()));
        let packed = match winograd {
            Some(_) => None,
            None => weight.cpu.as_ref().map(|wv| Packed::new(wv, k * k * cin, cout, &bias, slope.as_deref())),
        };
        let int16 = match &weight.cpu {
            Some(wv) if cfg!(target_arch = "x86_64") => Int16Conv::new(wv, k, cin, cout, &bias, slope.as_deref()),
            _ => None,
        };
        Ok(Self { k, cin, cout, weight, epilogue: Epilogue::new(bias, slope), packed, int16, winograd })
    }

    /// Applies the layer to `x` (needs `x.h, x.w >= k` and `x.c == cin`).
    /// With `integers`, the layer runs as a direct convolution in 16-bit
    /// integers where the level has an integer kernel
    /// ([`super::int16_conv`]); otherwise, and always without it, in f32
    /// (direct, or in Winograd form).
    pub fn forward(&self, x: &Act, integers: bool) -> Result<Act> {
        let k = self.k;
        if x.c != self.cin || x.h < k || x.w < k {
            candle_core::bail!("conv {k}x{k}/{}: bad input {}x{}x{}", self.cin, x.h, x.w, x.c);
        }
        let (oh, ow) = (x.h - k + 1, x.w - k + 1);
        let rows = x.n * oh * ow;
        let level = simd_level();
        let geo = ConvGeometry { n: x.n, h: x.h, w: x.w, cin: x.c, k, oh, ow, cout: self.cout };
        let direct = |run: &dyn Fn(&mut [MaybeUninit<f32>]) -> bool| {
            written_by(rows * self.cout, run).map(|data| Act { n: x.n, h: oh, w: ow, c: self.cout, data })
        };
        let int16 = self.int16.as_ref().filter(|_| integers);
        if let Some(y) = int16.and_then(|q| direct(&|out| q.forward(level, &geo, &x.data, out))) {
            return Ok(y);
        }
        if let Some(wg) = &self.winograd {
            return Ok(wg.forward(level, x));
        }
        let f32_direct = |p: &Packed| direct(&|out| {
            conv_direct(level, &geo, &x.data, p, out);
            true
        });
        if let Some(y) = self.packed.as_ref().and_then(f32_direct) {
            return Ok(y);
        }
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

/// Output channels computed together by [`conv_direct`]: one AVX-512
/// vector, two AVX2 vectors (zero-padded past the layer's channels).
pub(super) const NC: usize = 16;
/// Output pixels computed together by [`conv_direct`] (`TILE x NC`
/// accumulators: 12 AVX2 or 6 AVX-512 registers).
const TILE: usize = 6;

/// Weights, bias and PReLU slopes packed for [`conv_direct`]: block `b` of
/// [`NC`] output channels holds `kk` rows (kernel position, input channel)
/// of `NC` weights, zero past the last channel.
#[derive(Debug, Clone)]
struct Packed {
    kk: usize,
    w: Vec<f32>,
    /// Per padded channel; slope 1 (identity) without PReLU.
    bias: Vec<f32>,
    slope: Vec<f32>,
}

impl Packed {
    /// `w` is `(kk, cout)` row-major.
    fn new(w: &[f32], kk: usize, cout: usize, bias: &[f32], slope: Option<&[f32]>) -> Self {
        let blocks = cout.div_ceil(NC);
        let mut packed = vec![0f32; blocks * kk * NC];
        for b in 0..blocks {
            for j in 0..kk {
                for c in 0..NC.min(cout - b * NC) {
                    packed[(b * kk + j) * NC + c] = w[j * cout + b * NC + c];
                }
            }
        }
        let pad = |v: &[f32], fill: f32| {
            let mut p = v.to_vec();
            p.resize(blocks * NC, fill);
            p
        };
        Self { kk, w: packed, bias: pad(bias, 0.0), slope: pad(slope.unwrap_or(&[]), 1.0) }
    }
}

/// Sizes of one [`conv_direct`] call.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConvGeometry {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub k: usize,
    pub oh: usize,
    pub ow: usize,
    pub cout: usize,
}

/// A position among a layer's output pixels (image, row, column), for
/// stepping from one pixel to the next without a division.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct PixelWalk {
    img: usize,
    y: usize,
    x: usize,
}

impl ConvGeometry {
    /// The walk from output pixel `q` (numbered across images, rows,
    /// columns): two divisions.
    #[inline(always)]
    pub(super) fn walk_from(&self, q: usize) -> PixelWalk {
        let plane = self.oh * self.ow;
        let (img, rem) = (q / plane, q % plane);
        PixelWalk { img, y: rem / self.ow, x: rem % self.ow }
    }

    /// Offsets in the input of the first value of the next `R` output
    /// pixels of `walk`, which then stands after them: steps along the
    /// rows and across images, no division. A layer's tiles, in order,
    /// take their offsets from one walk (the divisions of
    /// [`ConvGeometry::tile_bases`] for every tile cost a tenth of a
    /// 3-channel layer).
    #[inline(always)]
    pub(super) fn next_bases<const R: usize>(&self, walk: &mut PixelWalk) -> [usize; R] {
        let mut bases = [0; R];
        for base in &mut bases {
            *base = ((walk.img * self.h + walk.y) * self.w + walk.x) * self.cin;
            walk.x += 1;
            if walk.x == self.ow {
                walk.x = 0;
                walk.y += 1;
                if walk.y == self.oh {
                    walk.y = 0;
                    walk.img += 1;
                }
            }
        }
        bases
    }

    /// Offsets in the input of the first value of output pixels
    /// `q..q + R`: [`ConvGeometry::next_bases`] from pixel `q`. Shared by
    /// [`conv_direct`] and the integer kernels.
    #[inline(always)]
    pub(super) fn tile_bases<const R: usize>(&self, q: usize) -> [usize; R] {
        self.next_bases(&mut self.walk_from(q))
    }
}


simd_kernel! {
/// A valid, stride-1 `k x k` convolution over NHWC activations, with bias
/// and PReLU, without im2col: [`TILE`] output pixels x [`NC`] output
/// channels are accumulated in registers; for each kernel row, a pixel's
/// inputs (`k * cin` values) are contiguous in NHWC and the packed weights
/// are read in the same order, so the loop is a GEMM microkernel reading
/// its left operand straight from the activations.
///
/// `out` holds `n * oh * ow * cout` values plus [`NC`] of slack, and every
/// value before the slack is written. Each pixel's block of channels is
/// stored whole, [`NC`] values: the last block, when `cout` is not a
/// multiple of `NC`, also writes past its pixel, into the first channels
/// of the following pixel(s) (several when `cout < NC / 2`) or the slack.
/// It runs first, pixel by pixel in order, so each such value is written
/// again, rightly, afterwards (by the following pixels' own stores, or by
/// a block before it). A partial store (a `memcpy` call per pixel)
/// cost 6 % of MTCNN's time.
fn conv_direct(g: &ConvGeometry, x: &[f32], p: &Packed, out: &mut [MaybeUninit<f32>]) {
    let pixels = g.n * g.oh * g.ow;
    assert_eq!(out.len(), pixels * g.cout + NC, "conv_direct: output size");
    for b in (0..g.cout.div_ceil(NC)).rev() {
        let wb = &p.w[b * p.kk * NC..(b + 1) * p.kk * NC];
        let epi = (&p.bias[b * NC..(b + 1) * NC], &p.slope[b * NC..(b + 1) * NC]);
        let (mut q, mut walk) = (0, g.walk_from(0));
        while q + TILE <= pixels {
            conv_tile::<S, TILE>(g, x, wb, g.next_bases(&mut walk), epi, &mut out[q * g.cout + b * NC..]);
            q += TILE;
        }
        if q < pixels {
            if pixels >= TILE {
                // Last partial tile: redo the last TILE pixels (same values).
                let q = pixels - TILE;
                conv_tile::<S, TILE>(g, x, wb, g.tile_bases(q), epi, &mut out[q * g.cout + b * NC..]);
            } else {
                for q in q..pixels {
                    conv_tile::<S, 1>(g, x, wb, g.tile_bases(q), epi, &mut out[q * g.cout + b * NC..]);
                }
            }
        }
    }
}
}

/// [`conv_direct`] for `R` output pixels whose inputs start at `bases`, one
/// block of channels: stores [`NC`] values per pixel to `out`, in pixel
/// order (pixel `r` at `r * cout`).
#[inline(always)]
fn conv_tile<S: Isa, const R: usize>(
    g: &ConvGeometry,
    x: &[f32],
    wb: &[f32],
    bases: [usize; R],
    (bias, slope): (&[f32], &[f32]),
    out: &mut [MaybeUninit<f32>],
) {
    let seg = g.k * g.cin;
    let mut acc = [[0f32; NC]; R];
    for ky in 0..g.k {
        let rows: [&[f32]; R] = std::array::from_fn(|r| &x[bases[r] + ky * g.w * g.cin..][..seg]);
        let wk = &wb[ky * seg * NC..(ky + 1) * seg * NC];
        for (j, wv) in wk.chunks_exact(NC).enumerate() {
            let wv: &[f32; NC] = wv.try_into().unwrap();
            for r in 0..R {
                let a = rows[r][j];
                for c in 0..NC {
                    acc[r][c] = madd::<S>(a, wv[c], acc[r][c]);
                }
            }
        }
    }
    let (bias, slope): (&[f32; NC], &[f32; NC]) = (bias.try_into().unwrap(), slope.try_into().unwrap());
    for (r, acc) in acc.iter().enumerate() {
        let mut v = [0f32; NC];
        for c in 0..NC {
            let t = acc[c] + bias[c];
            // Branch-free; equals `t > 0 ? t : slope * t` (slope 1: identity).
            v[c] = t.max(0.0) + t.min(0.0) * slope[c];
        }
        // A whole block: a fixed-size store, vector instructions.
        let dst: &mut [MaybeUninit<f32>; NC] = (&mut out[r * g.cout..r * g.cout + NC]).try_into().unwrap();
        *dst = v.map(MaybeUninit::new);
    }
}

/// `nn.MaxPool2d(k, s, ceil_mode=True)` without padding: the last window in
/// each direction may be partial. (A side shorter than `k`, which PyTorch
/// refuses, gives one partial window.)
pub fn max_pool_ceil(x: &Act, k: usize, s: usize) -> Act {
    max_pool_ceil_kernel(simd_level(), x, k, s)
}

/// Windows along a side of `len` in ceil mode: `ceil((len - k) / s) + 1`,
/// less a last one that would start past the side (PyTorch's rule; it
/// happens only when `s > k`). At least one.
fn pooled_len(len: usize, k: usize, s: usize) -> usize {
    let n = len.saturating_sub(k).div_ceil(s) + 1;
    if n > 1 && (n - 1) * s >= len {
        n - 1
    } else {
        n
    }
}

simd_kernel! {
fn max_pool_ceil_kernel(x: &Act, k: usize, s: usize) -> Act {
    let out = |len: usize| pooled_len(len, k, s);
    let (oh, ow) = (out(x.h), out(x.w));
    let c = x.c;
    let row = x.w * c;
    let len = x.n * oh * ow * c;
    // Not filled first: every value is written below.
    let mut data: Vec<f32> = Vec::with_capacity(len);
    let dst = &mut data.spare_capacity_mut()[..len];
    // Per output row: the column-wise max of its input rows (long
    // contiguous loops), then the max over each window's pixels.
    let mut vmax = vec![0f32; row];
    for n in 0..x.n {
        let image = &x.data[n * x.h * row..(n + 1) * x.h * row];
        for oy in 0..oh {
            let (y0, y1) = (oy * s, (oy * s + k).min(x.h));
            window_max(&image[y0 * row..], row, y1 - y0, &mut vmax, |v| v);
            let orow = &mut dst[(n * oh + oy) * ow * c..(n * oh + oy + 1) * ow * c];
            for (ox, o) in orow.chunks_exact_mut(c.max(1)).enumerate() {
                let (x0, x1) = (ox * s, (ox * s + k).min(x.w));
                window_max(&vmax[x0 * c..], c, x1 - x0, o, MaybeUninit::new);
            }
        }
    }
    // SAFETY: every one of the `len` values was written above.
    unsafe { data.set_len(len) };
    Act { n: x.n, h: oh, w: ow, c, data }
}
}

/// `a > b ? a : b`: one `maxps` (MTCNN's activations are never NaN).
#[inline(always)]
fn fmax(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// `out[i] = put(max over j < count of src[j * stride + i])`. Windows of 2
/// and 3 (all of MTCNN's) have loops of their own, which vectorise.
#[inline(always)]
fn window_max<T>(src: &[f32], stride: usize, count: usize, out: &mut [T], put: impl Fn(f32) -> T) {
    let n = out.len();
    let at = |j: usize| &src[j * stride..j * stride + n];
    match count {
        3 => {
            let (a, b, d) = (at(0), at(1), at(2));
            for i in 0..n {
                out[i] = put(fmax(fmax(a[i], b[i]), d[i]));
            }
        }
        2 => {
            let (a, b) = (at(0), at(1));
            for i in 0..n {
                out[i] = put(fmax(a[i], b[i]));
            }
        }
        _ => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = put((0..count).fold(f32::NEG_INFINITY, |m, j| fmax(m, src[j * stride + i])));
            }
        }
    }
}

/// Output columns per block of a [`Dense`] layer's packed weights.
const DENSE_COLS: usize = 16;
/// Rows (crops) that share each weight of a block as it is read.
const DENSE_ROWS: usize = 4;

/// A dense layer (PyTorch `Linear`) with an optional PReLU after it.
#[derive(Debug, Clone)]
pub struct Dense {
    /// `(in, out)`.
    weight: Weight,
    /// On CPU, the weights in blocks of [`DENSE_COLS`] columns,
    /// `[block][in][DENSE_COLS]`, zero past the last column: what
    /// [`dense_rows`] reads.
    packed: Option<Vec<f32>>,
    epilogue: Epilogue,
    /// For the first dense layer after the convolutions (see
    /// [`Dense::load_after_conv`]), the same layer as a 1x1 convolution of
    /// each row in 16-bit integers, run instead of `packed` where the level
    /// has an integer kernel (x86_64 CPU, see [`super::int16_conv`]).
    int16: Option<Int16Conv>,
}

impl Dense {
    fn new(weight: Weight, epilogue: Epilogue) -> Result<Self> {
        let (k, cols) = weight.tensor.dims2()?;
        let packed = weight.cpu.as_ref().map(|w| {
            let mut p = vec![0f32; cols.div_ceil(DENSE_COLS) * k * DENSE_COLS];
            for (b, block) in p.chunks_exact_mut(k * DENSE_COLS).enumerate() {
                for (i, row) in block.chunks_exact_mut(DENSE_COLS).enumerate() {
                    for (c, v) in row.iter_mut().enumerate().take(cols.saturating_sub(b * DENSE_COLS)) {
                        *v = w[i * cols + b * DENSE_COLS + c];
                    }
                }
            }
            p
        });
        Ok(Self { weight, packed, epilogue, int16: None })
    }

    /// Loads `<dense>.weight` `(out, in)`, `<dense>.bias` and, if `prelu` is
    /// given, `<prelu>.weight`.
    pub fn load(dense: VarBuilder, prelu: Option<VarBuilder>, fan_in: usize, fan_out: usize) -> Result<Self> {
        let w = dense.get((fan_out, fan_in), "weight")?;
        let bias = dense.get(fan_out, "bias")?.to_vec1::<f32>()?;
        let slope = prelu.map(|vb| load_slope(vb, fan_out)).transpose()?;
        Self::new(Weight::new(w.t()?.contiguous()?)?, Epilogue::new(bias, slope))
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
        let layer = Self::load(dense, prelu, h * w * c, fan_out)?;
        // weight is (in = w*h*c in (W, H, C) order, out): reorder rows to (H, W, C).
        let reordered = layer.weight.tensor.reshape((w, h, c, fan_out))?.permute((1, 0, 2, 3))?.contiguous()?;
        let mut layer = Self::new(Weight::new(reordered.reshape((h * w * c, fan_out))?)?, layer.epilogue)?;
        layer.int16 = match &layer.weight.cpu {
            Some(wv) if cfg!(target_arch = "x86_64") => Int16Conv::new(wv, 1, h * w * c, fan_out, layer.epilogue.bias(), layer.epilogue.slope()),
            _ => None,
        };
        Ok(layer)
    }

    /// Applies the layer to `n` rows of `x` (each `in` long). With
    /// `integers`, a layer that has the integer form (see
    /// [`Dense::load_after_conv`]) runs in 16-bit integers where the level
    /// has an integer kernel, as [`Conv::forward`]'s convolutions do; the
    /// heads after it, whose outputs are the network's answers, stay f32.
    pub fn forward(&self, x: Vec<f32>, n: usize, integers: bool) -> Result<Vec<f32>> {
        let Some(packed) = &self.packed else {
            return matmul(x, n, &self.weight, &self.epilogue);
        };
        let (k, cols) = self.weight.tensor.dims2()?;
        if x.len() != n * k {
            candle_core::bail!("dense: {} values for {n} rows of {k}", x.len());
        }
        let level = simd_level();
        if let Some(q) = self.int16.as_ref().filter(|_| integers && n > 0) {
            // Each row a 1x1 image of `k` channels: the output is `n` pixels
            // of `cols` channels, the rows of `out`.
            let geo = ConvGeometry { n, h: 1, w: 1, cin: k, k: 1, oh: 1, ow: 1, cout: cols };
            if let Some(out) = written_by(n * cols, |out| q.forward(level, &geo, &x, out)) {
                return Ok(out);
            }
        }
        let mut out = vec![0f32; n * cols];
        dense_rows(level, &x, n, k, packed, cols, &mut out);
        self.epilogue.apply_in_place(level, &mut out);
        Ok(out)
    }
}

/// `len` values written by `run` into fresh memory that is not zeroed first,
/// with [`NC`] values of slack after them (the direct kernels' whole-block
/// stores); `None` when `run` answers `false`.
fn written_by(len: usize, run: impl FnOnce(&mut [MaybeUninit<f32>]) -> bool) -> Option<Vec<f32>> {
    let mut data = Vec::with_capacity(len + NC);
    run(&mut data.spare_capacity_mut()[..len + NC]).then(|| {
        // SAFETY: `run` answered true: it initialised the first `len`
        // values.
        unsafe { data.set_len(len) };
        data
    })
}

simd_kernel! {
/// `out = x @ w` for a [`Dense`] layer on CPU: `x` is `rows x k`, `packed`
/// the `(k, cols)` weights as [`Dense::packed`], `out` `rows x cols`. The
/// weights are read once per [`DENSE_ROWS`] rows, straight from the packed
/// blocks (a general matrix product would pack O-Net's 1.2 MB of them again
/// on every call, for the few crops a photo has). Each value is one
/// multiply-add chain in `k` order, on every level.
fn dense_rows(x: &[f32], rows: usize, k: usize, packed: &[f32], cols: usize, out: &mut [f32]) {
    if rows == 0 || k == 0 {
        // No sums to take: `out` keeps its zeros.
        return;
    }
    for (b, block) in packed.chunks_exact(k * DENSE_COLS).enumerate() {
        let (c0, last) = (b * DENSE_COLS, rows - 1);
        let width = DENSE_COLS.min(cols - c0);
        for r0 in (0..rows).step_by(DENSE_ROWS) {
            // Rows past the last repeat it (computed, not stored).
            let xr: [&[f32]; DENSE_ROWS] = std::array::from_fn(|r| {
                let row = (r0 + r).min(last);
                &x[row * k..(row + 1) * k]
            });
            let mut acc = [[0f32; DENSE_COLS]; DENSE_ROWS];
            for i in 0..k {
                let wv: &[f32; DENSE_COLS] = block[i * DENSE_COLS..(i + 1) * DENSE_COLS].try_into().unwrap();
                for (a, xs) in acc.iter_mut().zip(&xr) {
                    let xv = xs[i];
                    for (a, w) in a.iter_mut().zip(wv) {
                        *a = madd::<S>(xv, *w, *a);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate().take(rows - r0) {
                out[(r0 + r) * cols + c0..][..width].copy_from_slice(&a[..width]);
            }
        }
    }
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
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
        let y = crate::simd::with_level(level, || conv.forward(&Act { n: 1, h, w, c: cin, data: xv.clone() }, false))?;
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
                    assert!((got - want).abs() < 1e-5, "{level}: {got} vs {want}");
                }
            }
        }
        }
        Ok(())
    }

    /// A tile's input offsets, stepped along rows and across images, are
    /// those of each pixel computed on its own, for tiles starting anywhere
    /// (across row and image ends too).
    #[test]
    fn tile_bases_step_across_rows_and_images() {
        let g = ConvGeometry { n: 3, h: 5, w: 6, cin: 4, k: 2, oh: 4, ow: 5, cout: 8 };
        let one = |q: usize| {
            let (img, rem) = (q / (g.oh * g.ow), q % (g.oh * g.ow));
            ((img * g.h + rem / g.ow) * g.w + rem % g.ow) * g.cin
        };
        let pixels = g.n * g.oh * g.ow;
        for q in 0..=pixels - 7 {
            let want: [usize; 7] = std::array::from_fn(|r| one(q + r));
            assert_eq!(g.tile_bases::<7>(q), want, "tile from pixel {q}");
        }
        assert_eq!(g.tile_bases::<1>(pixels - 1), [one(pixels - 1)]);
        // One walk through tiles of 7, as the kernels take them.
        let mut walk = g.walk_from(0);
        for q in (0..=pixels - 7).step_by(7) {
            let want: [usize; 7] = std::array::from_fn(|r| one(q + r));
            assert_eq!(g.next_bases::<7>(&mut walk), want, "walked tile from pixel {q}");
        }
    }

    /// The layer in f32 (direct convolution, or Winograd from 32 input
    /// channels) and in integers against im2col + matrix product, on every
    /// level, over shapes with partial tiles and channel blocks (6, 10, 17,
    /// 28 channels: the last block's whole stores spill into the next
    /// pixel), several images and a 1x1 kernel.
    #[test]
    fn direct_conv_matches_im2col_on_every_level() -> Result<()> {
        let dev = Device::Cpu;
        for &(n, h, w, cin, cout, k) in &[
            (1, 12, 12, 3, 10, 3),
            (3, 11, 11, 28, 48, 3),
            (2, 4, 4, 48, 64, 2),
            (1, 5, 7, 32, 6, 1),
            (1, 3, 3, 4, 17, 3),
            (1, 3, 4, 3, 6, 3),
            (2, 9, 10, 3, 28, 3),
            (2, 23, 23, 32, 64, 3),
        ] {
            let wv: Vec<f32> = (0..cout * cin * k * k).map(|i| ((i * 7 % 11) as f32 - 5.0) / 7.0).collect();
            let xv: Vec<f32> = (0..n * h * w * cin).map(|i| ((i * 5 % 13) as f32 - 6.0) / 5.0).collect();
            let bias: Vec<f32> = (0..cout).map(|i| i as f32 * 0.1 - 0.5).collect();
            let slope: Vec<f32> = (0..cout).map(|i| 0.05 * i as f32).collect();
            let mut conv = Conv::from_parts(Tensor::from_vec(wv, (cout, cin, k, k), &dev)?, bias, Some(slope))?;
            let x = Act { n, h, w, c: cin, data: xv };
            let (packed, winograd) = (conv.packed.take(), conv.winograd.take());
            let want = conv.forward(&x, false)?; // im2col + matmul
            (conv.packed, conv.winograd) = (packed, winograd);
            for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
                let scale = want.data.iter().fold(1f32, |m, v| m.max(v.abs()));
                // f32, then the integer kernel where the level has one (its
                // own bound is tested in `int16_conv`).
                for (integers, tolerance) in [(false, 1e-5), (true, 2e-3)] {
                    let got = crate::simd::with_level(level, || conv.forward(&x, integers))?;
                    assert_eq!((got.n, got.h, got.w, got.c), (want.n, want.h, want.w, want.c));
                    for (a, b) in got.data.iter().zip(&want.data) {
                        assert!((a - b).abs() < tolerance * scale, "{level} {:?} integers {integers}: {a} vs {b}", (n, h, w, cin, cout, k));
                    }
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

    /// Pooling equals a naive max over each (ceil-mode) window on every
    /// level, for MTCNN's windows and others, several images and channel
    /// counts that are not a multiple of a vector.
    #[test]
    fn pooling_matches_a_naive_max_on_every_level() {
        let shapes =
            [(2, 9, 11, 10, 3, 2), (1, 22, 22, 28, 3, 2), (3, 5, 4, 3, 2, 2), (1, 7, 6, 17, 4, 3), (1, 4, 5, 2, 1, 1), (1, 5, 5, 2, 1, 3), (2, 6, 7, 3, 2, 3)];
        for &(n, h, w, c, k, s) in &shapes {
            let data: Vec<f32> = (0..n * h * w * c).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let x = Act { n, h, w, c, data };
            // Windows start every `s` while inside the side, up to the first
            // that reaches its end (ceil mode).
            let out = |len: usize| (0..).map(|j| j * s).take_while(|&st| st < len && st + k < len + s).count();
            let (oh, ow) = (out(h), out(w));
            let mut want = Vec::new();
            for img in 0..n {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ch in 0..c {
                            let mut m = f32::NEG_INFINITY;
                            for iy in oy * s..(oy * s + k).min(h) {
                                for ix in ox * s..(ox * s + k).min(w) {
                                    m = m.max(x.data[((img * h + iy) * w + ix) * c + ch]);
                                }
                            }
                            want.push(m);
                        }
                    }
                }
            }
            for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
                let y = crate::simd::with_level(level, || max_pool_ceil(&x, k, s));
                assert_eq!((y.n, y.h, y.w, y.c), (n, oh, ow, c), "{level}");
                assert_eq!(y.data, want, "{level} {:?}", (n, h, w, c, k, s));
            }
        }
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
        assert_eq!(dense.forward(x.clone(), 1, false)?, vec![11.0]);
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            let got = crate::simd::with_level(level, || dense.forward(x.clone(), 1, true))?;
            assert!((got[0] - 11.0).abs() < 1e-2, "{level}: {got:?}");
        }
        Ok(())
    }

    /// The first dense layer after the convolutions in 16-bit integers (a
    /// 1x1 convolution of each row), on every level with an integer kernel:
    /// within what the two roundings can move each value, and not the f32
    /// kernel's values (so the integer product did run). MTCNN's own shapes
    /// (R-Net's 576 -> 128 over 58 crops, O-Net's 1152 -> 256 over 9), one
    /// row, rows fewer than a tile, channels that do not fill a block.
    #[test]
    fn dense_in_integers_stays_within_its_rounding() -> Result<()> {
        let dev = Device::Cpu;
        for &(rows, k, cols) in &[(58, 576, 128), (9, 1152, 256), (1, 64, 24), (5, 30, 17), (13, 7, 3)] {
            let wv: Vec<f32> = (0..cols * k).map(|i| ((i * 7 % 23) as f32 - 11.0) / 13.0).collect();
            let x: Vec<f32> = (0..rows * k).map(|i| ((i * 5 % 19) as f32 - 9.0) / 7.0).collect();
            let bias: Vec<f32> = (0..cols).map(|c| c as f32 / 10.0 - 0.5).collect();
            let slope: Vec<f32> = (0..cols).map(|c| 0.05 * (c % 5) as f32).collect();
            let tensors = [
                ("d.weight".to_string(), Tensor::from_vec(wv.clone(), (cols, k), &dev)?),
                ("d.bias".to_string(), Tensor::from_vec(bias.clone(), cols, &dev)?),
                ("p.weight".to_string(), Tensor::from_vec(slope.clone(), cols, &dev)?),
            ];
            let vb = VarBuilder::from_tensors(tensors.into_iter().collect(), candle_core::DType::F32, &dev);
            // A 1x1 "map" of k channels: no reordering of the weights.
            let dense = Dense::load_after_conv(vb.pp("d"), Some(vb.pp("p")), (1, 1, k), cols)?;
            let xmax = x.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            // The integer steps are at least sqrt(i32::MAX / k) to a
            // magnitude (see `int16_conv`); twice the rounding bound.
            let q = (i32::MAX as f64 / k as f64).sqrt();
            for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported() && crate::int16::int_kernel(*l).is_some()) {
                let got = crate::simd::with_level(level, || dense.forward(x.clone(), rows, true))?;
                let f32s = crate::simd::with_level(level, || dense.forward(x.clone(), rows, false))?;
                assert!(got.iter().zip(&f32s).any(|(a, b)| a != b), "{level} {rows}x{k}x{cols}: the f32 kernel ran");
                for r in 0..rows {
                    for c in 0..cols {
                        let column = (0..k).map(|i| wv[c * k + i] as f64);
                        let (wsum, wmax) = column.clone().fold((0.0, 0f64), |(s, m), w| (s + w.abs(), m.max(w.abs())));
                        let xsum: f64 = (0..k).map(|i| (x[r * k + i] as f64).abs()).sum();
                        let mut v = bias[c] as f64 + (0..k).map(|i| x[r * k + i] as f64 * wv[c * k + i] as f64).sum::<f64>();
                        if v < 0.0 {
                            v *= slope[c] as f64;
                        }
                        let bound = (xmax * wsum + wmax * xsum) / q + 1e-5 * (1.0 + v.abs());
                        let g = got[r * cols + c] as f64;
                        assert!((g - v).abs() <= bound, "{level} {rows}x{k}x{cols} at ({r}, {c}): {g} vs {v} (bound {bound})");
                    }
                }
            }
        }
        Ok(())
    }

    /// The packed kernel against the plain sums, for row counts around its
    /// groups of rows, column counts around its blocks, with and without a
    /// PReLU, on every level.
    #[test]
    fn dense_matches_plain_sums() -> Result<()> {
        let dev = Device::Cpu;
        for &(rows, k, cols, prelu) in &[(1, 1, 1, false), (3, 7, 2, true), (4, 33, 16, false), (5, 20, 17, true), (9, 64, 40, true), (58, 576, 128, true)] {
            let wv: Vec<f32> = (0..cols * k).map(|i| ((i * 7 % 23) as f32 - 11.0) / 13.0).collect();
            let x: Vec<f32> = (0..rows * k).map(|i| ((i * 5 % 19) as f32 - 9.0) / 7.0).collect();
            let bias: Vec<f32> = (0..cols).map(|c| c as f32 / 10.0 - 0.5).collect();
            let slope: Vec<f32> = (0..cols).map(|c| 0.05 * (c % 5) as f32).collect();
            let mut tensors = vec![
                ("d.weight".to_string(), Tensor::from_vec(wv.clone(), (cols, k), &dev)?),
                ("d.bias".to_string(), Tensor::from_vec(bias.clone(), cols, &dev)?),
            ];
            if prelu {
                tensors.push(("p.weight".to_string(), Tensor::from_vec(slope.clone(), cols, &dev)?));
            }
            let vb = VarBuilder::from_tensors(tensors.into_iter().collect(), candle_core::DType::F32, &dev);
            let dense = Dense::load(vb.pp("d"), prelu.then(|| vb.pp("p")), k, cols)?;
            for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
                let got = crate::simd::with_level(level, || dense.forward(x.clone(), rows, true))?;
                for r in 0..rows {
                    for c in 0..cols {
                        let mut v = bias[c] as f64 + (0..k).map(|i| x[r * k + i] as f64 * wv[c * k + i] as f64).sum::<f64>();
                        if prelu && v < 0.0 {
                            v *= slope[c] as f64;
                        }
                        let g = got[r * cols + c] as f64;
                        assert!((g - v).abs() < 1e-4 * (1.0 + v.abs()), "{level} {rows}x{k}x{cols} at ({r}, {c}): {g} vs {v}");
                    }
                }
            }
        }
        Ok(())
    }
}
