//! 3x3 convolutions as Winograd F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms
//! for Convolutional Neural Networks", CVPR 2016).
//!
//! Each 2x2 block of outputs is computed from the 4x4 input tile under it:
//! the tile is transformed (`V = Bᵀ d B`, additions only), multiplied
//! position by position with the transformed kernel (`U = G g Gᵀ`, once at
//! load), and transformed back (`Y = Aᵀ M A`). Summed over input channels,
//! the 16 positions are 16 matrix products `(tiles x cin) @ (cin x cout)`:
//! 16 multiply-adds per input/output channel pair and 2x2 outputs instead of
//! 36, so 2.25x less arithmetic than the direct convolution. The products
//! run on [`sgemm`]; the transforms are loops over channels, compiled per
//! SIMD level.
//!
//! It pays only where the products are long enough to dwarf the transforms:
//! MTCNN's O-Net (32 and 64 input channels) runs about a quarter faster with it,
//! while P-Net (10 and 16) and R-Net (28) ran slower or no faster, so
//! [`super::layers::Conv`] uses it from 32 input channels on, in f32. Where
//! the level has an integer kernel ([`super::int16_conv`]), the convolution
//! in 16-bit integers is faster still (O-Net about 15 % on AVX2 and 20 % on
//! AVX-512 VNNI in its direct form, more in its own one-dimensional
//! Winograd form, F(2, 3) along the rows), and runs instead.
//!
//! Results equal the direct convolution up to float rounding (the transforms
//! only add, subtract and halve; the layer tests bound the difference).

use super::layers::Act;
use crate::simd::{gemm_parallelism, sgemm, simd_kernel, SimdLevel};

/// `G` of F(2x2, 3x3): `U = G g Gᵀ` turns a 3x3 kernel into 4x4.
const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];

/// Floats of transformed inputs and products held per chunk of tiles
/// (`16 * tiles * (cin + cout)`): 128 KiB, so that a chunk stays in L2 even
/// on cores with 256 KiB of it.
const CHUNK_FLOATS: usize = 32 * 1024;

/// A 3x3, stride-1, valid convolution with bias and optional PReLU, in its
/// Winograd form (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct Winograd {
    cin: usize,
    cout: usize,
    /// `U` at each of the 16 tile positions: a `(cin, cout)` row-major matrix.
    u: Vec<Vec<f32>>,
    bias: Vec<f32>,
    /// PReLU slopes; 1 (identity) without PReLU.
    slope: Vec<f32>,
}

/// Where the tiles of one layer call lie.
#[derive(Debug, Clone, Copy)]
struct TileGrid {
    /// Input height and width.
    h: usize,
    w: usize,
    /// Output height and width (`h - 2`, `w - 2`).
    oh: usize,
    ow: usize,
    /// Tiles down and across (`ceil(oh / 2)`, `ceil(ow / 2)`).
    th: usize,
    tw: usize,
}

impl TileGrid {
    /// Image, tile row and tile column of tile `q` (row-major over images).
    fn tile(&self, q: usize) -> (usize, usize, usize) {
        let per_image = self.th * self.tw;
        let rem = q % per_image;
        (q / per_image, rem / self.tw, rem % self.tw)
    }
}

impl Winograd {
    /// `w`: the 3x3 kernel as a `(9 * cin, cout)` row-major matrix, rows
    /// ordered (kh, kw, cin) as in [`super::layers::Conv`].
    pub(super) fn new(w: &[f32], cin: usize, cout: usize, bias: &[f32], slope: Option<&[f32]>) -> Self {
        let mut u = vec![vec![0f32; cin * cout]; 16];
        for ci in 0..cin {
            for co in 0..cout {
                let g = |kh: usize, kw: usize| f64::from(w[((kh * 3 + kw) * cin + ci) * cout + co]);
                // t = G g (4x3), then U = t Gᵀ (4x4), in f64 and rounded once.
                let t: [[f64; 3]; 4] = std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| G[i][k] * g(k, j)).sum()));
                for i in 0..4 {
                    for j in 0..4 {
                        u[i * 4 + j][ci * cout + co] = (0..3).map(|k| t[i][k] * G[j][k]).sum::<f64>() as f32;
                    }
                }
            }
        }
        Self { cin, cout, u, bias: bias.to_vec(), slope: slope.map_or_else(|| vec![1.0; cout], <[f32]>::to_vec) }
    }

    /// Applies the layer to `x` (`x.c == cin`, `x.h, x.w >= 3`).
    pub(super) fn forward(&self, level: SimdLevel, x: &Act) -> Act {
        self.forward_chunked(level, x, CHUNK_FLOATS / (16 * (self.cin + self.cout)))
    }

    /// [`Winograd::forward`], `chunk` tiles at a time.
    fn forward_chunked(&self, level: SimdLevel, x: &Act, chunk: usize) -> Act {
        let (oh, ow) = (x.h - 2, x.w - 2);
        let grid = TileGrid { h: x.h, w: x.w, oh, ow, th: oh.div_ceil(2), tw: ow.div_ceil(2) };
        let tiles = x.n * grid.th * grid.tw;
        let chunk = chunk.min(tiles).max(1);
        let mut v = vec![0f32; 16 * chunk * self.cin];
        let mut m = vec![0f32; 16 * chunk * self.cout];
        let mut out = vec![0f32; x.n * oh * ow * self.cout];
        let mut t0 = 0;
        while t0 < tiles {
            let len = chunk.min(tiles - t0);
            input_transform(level, x, &grid, t0, len, &mut v);
            let products = self.u.iter().zip(v.chunks_exact(chunk * self.cin).zip(m.chunks_exact_mut(chunk * self.cout)));
            for (u, (v, m)) in products {
                sgemm(level, len, self.cout, self.cin, m, v, u, false, gemm_parallelism());
            }
            output_transform(level, &m, &grid, t0, len, &self.bias, &self.slope, &mut out);
            t0 += len;
        }
        Act { n: x.n, h: oh, w: ow, c: self.cout, data: out }
    }
}

/// Channels handled together by the transforms (one AVX2 vector; the
/// fixed-size arrays below compile to vector instructions on every level).
const LANES: usize = 8;

type Lanes = [f32; LANES];

/// `s[ch .. ch + w]` as lanes, zero past `w`.
#[inline(always)]
fn load(s: &[f32], ch: usize, w: usize) -> Lanes {
    if w == LANES {
        s[ch..ch + LANES].try_into().expect("LANES values")
    } else {
        let mut v = [0f32; LANES];
        v[..w].copy_from_slice(&s[ch..ch + w]);
        v
    }
}

/// Writes the first `w` lanes of `v` to `s[ch ..]`.
#[inline(always)]
fn store(s: &mut [f32], ch: usize, w: usize, v: &Lanes) {
    if w == LANES {
        let dst: &mut Lanes = (&mut s[ch..ch + LANES]).try_into().expect("LANES values");
        *dst = *v;
    } else {
        s[ch..ch + w].copy_from_slice(&v[..w]);
    }
}

#[inline(always)]
fn lanes(f: impl Fn(usize) -> f32) -> Lanes {
    std::array::from_fn(f)
}

/// `Bᵀ` applied to four values: `(a - c, b + c, c - b, b - d)`.
#[inline(always)]
fn bt(a: &Lanes, b: &Lanes, c: &Lanes, d: &Lanes) -> [Lanes; 4] {
    [lanes(|l| a[l] - c[l]), lanes(|l| b[l] + c[l]), lanes(|l| c[l] - b[l]), lanes(|l| b[l] - d[l])]
}

/// `Aᵀ` applied to four values: `(a + b + c, b - c - d)`.
#[inline(always)]
fn at(a: &Lanes, b: &Lanes, c: &Lanes, d: &Lanes) -> [Lanes; 2] {
    [lanes(|l| a[l] + b[l] + c[l]), lanes(|l| b[l] - c[l] - d[l])]
}

simd_kernel! {
/// `V = Bᵀ d B` for tiles `t0 .. t0 + len`: writes tile `t`'s position `p`
/// to `v`'s plane `p` (planes of `v.len() / 16` values), row `t`. Inputs
/// past the image's edge are zero.
fn input_transform(x: &Act, grid: &TileGrid, t0: usize, len: usize, v: &mut [f32]) {
    let c = x.c;
    let zeros = vec![0f32; c];
    let plane = v.len() / 16;
    let mut planes: Vec<&mut [f32]> = v.chunks_exact_mut(plane).collect();
    for t in 0..len {
        let (img, ty, tx) = grid.tile(t0 + t);
        let d: [&[f32]; 16] = std::array::from_fn(|p| {
            let (y, xx) = (2 * ty + p / 4, 2 * tx + p % 4);
            if y < grid.h && xx < grid.w { &x.data[((img * grid.h + y) * grid.w + xx) * c..][..c] } else { &zeros[..] }
        });
        let mut rows = planes.iter_mut();
        let o: [&mut [f32]; 16] = std::array::from_fn(|_| &mut rows.next().expect("16 planes")[t * c..(t + 1) * c]);
        for ch in (0..c).step_by(LANES) {
            let w = LANES.min(c - ch);
            // Bᵀ d, one column of the tile at a time.
            let mut r = [[0f32; LANES]; 16];
            for j in 0..4 {
                let col = bt(&load(d[j], ch, w), &load(d[4 + j], ch, w), &load(d[8 + j], ch, w), &load(d[12 + j], ch, w));
                for (i, v) in col.iter().enumerate() {
                    r[i * 4 + j] = *v;
                }
            }
            // (Bᵀ d) B, one row at a time.
            for i in 0..4 {
                let row = bt(&r[i * 4], &r[i * 4 + 1], &r[i * 4 + 2], &r[i * 4 + 3]);
                for (j, v) in row.iter().enumerate() {
                    store(o[i * 4 + j], ch, w, v);
                }
            }
        }
    }
}
}

simd_kernel! {
/// `Y = Aᵀ M A` for tiles `t0 .. t0 + len` (`m` as written by the 16
/// products: plane `p`, row `t`), then bias and PReLU; writes the outputs
/// that fall inside the image to `out` (NHWC, `cout = bias.len()`).
fn output_transform(m: &[f32], grid: &TileGrid, t0: usize, len: usize, bias: &[f32], slope: &[f32], out: &mut [f32]) {
    let cout = bias.len();
    let plane = m.len() / 16;
    for t in 0..len {
        let s: [&[f32]; 16] = std::array::from_fn(|p| &m[p * plane + t * cout..][..cout]);
        let (img, ty, tx) = grid.tile(t0 + t);
        for ch in (0..cout).step_by(LANES) {
            let w = LANES.min(cout - ch);
            // Aᵀ M, one column at a time: q[r * 4 + j].
            let mut q = [[0f32; LANES]; 8];
            for j in 0..4 {
                let col = at(&load(s[j], ch, w), &load(s[4 + j], ch, w), &load(s[8 + j], ch, w), &load(s[12 + j], ch, w));
                q[j] = col[0];
                q[4 + j] = col[1];
            }
            let (b, a) = (load(bias, ch, w), load(slope, ch, w));
            for r in 0..2 {
                let y = at(&q[r * 4], &q[r * 4 + 1], &q[r * 4 + 2], &q[r * 4 + 3]);
                for (dx, y) in y.iter().enumerate() {
                    let (oy, ox) = (2 * ty + r, 2 * tx + dx);
                    if oy < grid.oh && ox < grid.ow {
                        let v = lanes(|l| {
                            let v = y[l] + b[l];
                            // Branch-free; equals `v > 0 ? v : slope * v`.
                            v.max(0.0) + v.min(0.0) * a[l]
                        });
                        store(&mut out[((img * grid.oh + oy) * grid.ow + ox) * cout..][..cout], ch, w, &v);
                    }
                }
            }
        }
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::with_level;

    /// A valid 3x3 convolution summed in f64, then bias and PReLU.
    fn naive(x: &Act, w: &[f32], cout: usize, bias: &[f32], slope: Option<&[f32]>) -> Vec<f32> {
        let (oh, ow, cin) = (x.h - 2, x.w - 2, x.c);
        let mut out = Vec::with_capacity(x.n * oh * ow * cout);
        for n in 0..x.n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for co in 0..cout {
                        let mut s = f64::from(bias[co]);
                        for ky in 0..3 {
                            for kx in 0..3 {
                                for ci in 0..cin {
                                    let xv = x.data[((n * x.h + oy + ky) * x.w + ox + kx) * cin + ci];
                                    s += f64::from(xv) * f64::from(w[((ky * 3 + kx) * cin + ci) * cout + co]);
                                }
                            }
                        }
                        let s = s as f32;
                        out.push(match slope {
                            Some(a) if s < 0.0 => s * a[co],
                            _ => s,
                        });
                    }
                }
            }
        }
        out
    }

    /// Odd and even output sizes (partial tiles), several images, channel
    /// counts that leave partial lanes, with and without PReLU, in one chunk
    /// and in chunks of a few tiles, and no image at all, on every SIMD level
    /// the CPU runs.
    #[test]
    fn winograd_matches_a_naive_convolution_on_every_level() {
        for &(n, h, w, cin, cout, prelu) in
            &[(0, 5, 5, 32, 8, true), (1, 3, 3, 1, 1, false), (2, 5, 6, 3, 5, true), (3, 23, 23, 32, 64, true), (1, 10, 7, 13, 20, false), (2, 4, 9, 64, 9, true)]
        {
            let wv: Vec<f32> = (0..9 * cin * cout).map(|i| ((i * 7 % 11) as f32 - 5.0) / 7.0).collect();
            let x = Act { n, h, w, c: cin, data: (0..n * h * w * cin).map(|i| ((i * 5 % 13) as f32 - 6.0) / 5.0).collect() };
            let bias: Vec<f32> = (0..cout).map(|i| i as f32 * 0.1 - 0.5).collect();
            let slope: Vec<f32> = (0..cout).map(|i| 0.05 * i as f32 + 0.01).collect();
            let slope = prelu.then_some(&slope[..]);
            let want = naive(&x, &wv, cout, &bias, slope);
            let layer = Winograd::new(&wv, cin, cout, &bias, slope);
            for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
                for chunk in [usize::MAX, 1, 5] {
                    let got = with_level(level, || layer.forward_chunked(level, &x, chunk));
                    assert_eq!((got.n, got.h, got.w, got.c), (n, h - 2, w - 2, cout));
                    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                    for (i, (a, b)) in got.data.iter().zip(&want).enumerate() {
                        assert!((a - b).abs() <= 1e-5 * scale, "{level} {:?} chunk {chunk} #{i}: {a} vs {b}", (n, h, w, cin, cout));
                    }
                }
            }
        }
    }
}
