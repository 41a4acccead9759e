//! Area ("box filter") resampling exactly as PyTorch's
//! `F.interpolate(mode="area")`, i.e. `adaptive_avg_pool2d`: output cell `i`
//! of `n_out` averages input rows `floor(i*n_in/n_out) .. ceil((i+1)*n_in/n_out)`
//! (and likewise columns); the f32 window sum is divided by the window height,
//! then by its width (measured against torch 2.2 on channels-last input).

/// An RGB image as interleaved (HWC) samples of type `T` (`u8` for decoded
/// images, `f32` for an already downscaled working copy).
#[derive(Debug, Clone, Copy)]
pub struct Plane<'a, T> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` samples, row-major, RGB interleaved.
    pub data: &'a [T],
}

/// A rectangle `[x0, x0 + w) x [y0, y0 + h)` inside a [`Plane`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Left column.
    pub x0: usize,
    /// Top row.
    pub y0: usize,
    /// Width in pixels.
    pub w: usize,
    /// Height in pixels.
    pub h: usize,
}

/// Input rows (or columns) `[start, end)` averaged into output cell `i`.
#[inline]
fn window(i: usize, n_out: usize, n_in: usize) -> (usize, usize) {
    let start = (i * n_in) / n_out;
    let end = ((i + 1) * n_in).div_ceil(n_out);
    (start, end)
}

/// Area-resamples `region` of `src` to `out_w x out_h` and hands every output
/// pixel's three channel values to `store(y, x, [r, g, b])`.
///
/// Separable: each input row is first summed over the output columns'
/// windows, then those row sums over the output rows' windows. For `u8`
/// input every partial sum is an integer below 2^24, so the result is
/// bit-identical to PyTorch's window-by-window summation.
///
/// `region` must be non-empty and inside `src`; `out_w`, `out_h` must be > 0.
pub fn area_resample<T, F>(src: &Plane<'_, T>, region: Region, out_w: usize, out_h: usize, mut store: F)
where
    T: Copy + Into<f32>,
    F: FnMut(usize, usize, [f32; 3]),
{
    debug_assert!(region.w > 0 && region.h > 0 && out_w > 0 && out_h > 0);
    debug_assert!(region.x0 + region.w <= src.width && region.y0 + region.h <= src.height);
    let cols: Vec<(usize, usize)> = (0..out_w).map(|j| window(j, out_w, region.w)).collect();
    let stride = src.width * 3;
    let line = out_w * 3;
    // Horizontal pass: hsum[iy][ox][c] = sum of row iy over column window ox.
    let mut hsum = vec![0f32; region.h * line];
    for (iy, dst) in hsum.chunks_exact_mut(line).enumerate() {
        let start = (region.y0 + iy) * stride + region.x0 * 3;
        let row = &src.data[start..start + region.w * 3];
        for (d, &(w0, w1)) in dst.chunks_exact_mut(3).zip(&cols) {
            let mut s = [0f32; 3];
            for px in row[w0 * 3..w1 * 3].chunks_exact(3) {
                s[0] += px[0].into();
                s[1] += px[1].into();
                s[2] += px[2].into();
            }
            d.copy_from_slice(&s);
        }
    }
    // Vertical pass.
    let mut acc = vec![0f32; line];
    for oy in 0..out_h {
        let (h0, h1) = window(oy, out_h, region.h);
        let kh = (h1 - h0) as f32;
        acc.copy_from_slice(&hsum[h0 * line..(h0 + 1) * line]);
        for r in hsum[(h0 + 1) * line..h1 * line].chunks_exact(line) {
            for (a, v) in acc.iter_mut().zip(r) {
                *a += v;
            }
        }
        for (ox, (s, &(w0, w1))) in acc.chunks_exact(3).zip(&cols).enumerate() {
            let kw = (w1 - w0) as f32;
            store(oy, ox, [s[0] / kh / kw, s[1] / kh / kw, s[2] / kh / kw]);
        }
    }
}

/// A source of area-resampled, normalised network inputs: a [`Plane`]
/// (window sums in f32, the reference order) or an [`Integral`] of a `u8`
/// plane (same values, from a summed-area table).
pub trait AreaSource {
    /// Width in pixels.
    fn width(&self) -> usize;
    /// Height in pixels.
    fn height(&self) -> usize;
    /// Area-resamples `region` to `out_w x out_h` and appends it,
    /// normalised, in HWC order to `dst` (see [`resample_normalized_hwc`]).
    fn resample_normalized_hwc(&self, region: Region, out_w: usize, out_h: usize, dst: &mut Vec<f32>);
}

impl<T: Copy + Into<f32>> AreaSource for Plane<'_, T> {
    fn width(&self) -> usize {
        self.width
    }
    fn height(&self) -> usize {
        self.height
    }
    fn resample_normalized_hwc(&self, region: Region, out_w: usize, out_h: usize, dst: &mut Vec<f32>) {
        resample_normalized_hwc(self, region, out_w, out_h, dst)
    }
}

/// A `u8` RGB plane with its summed-area table (per channel, `u32`): any
/// window's sum is four look-ups. Built once per detection, it serves every
/// pyramid level and every R-Net / O-Net crop.
///
/// The results are bit-identical to [`resample_normalized_hwc`] on the
/// plane: a window of `u8` values sums to an integer, which f32 holds
/// exactly below 2^24 whatever the order of the additions, and the
/// division (`sum / kh / kw`) and normalisation are the same f32
/// operations. Windows large enough to reach 2^24 (over 65 793 pixels)
/// fall back to the plane's own resampling.
#[derive(Debug, Clone)]
pub struct Integral<'a> {
    plane: Plane<'a, u8>,
    /// `(height + 1) x (width + 1) x 3`: `sums[y][x][c]` = sum of the
    /// channel over rows `< y`, columns `< x`.
    sums: Vec<u32>,
}

/// Largest window area whose `u8` sum stays below 2^24.
const EXACT_WINDOW: usize = (1 << 24) / 255;

impl<'a> Integral<'a> {
    /// Builds the table. Sums wrap modulo 2^32 on images over 16 Mpx; window
    /// sums (differences, also taken modulo 2^32) stay exact as long as the
    /// window itself is smaller, which [`EXACT_WINDOW`] guarantees.
    pub fn new(plane: Plane<'a, u8>) -> Self {
        let (w, h) = (plane.width, plane.height);
        let stride = (w + 1) * 3;
        // One value past the last row: a window's sums are read four lanes
        // at a time from its pixel's first channel.
        let mut sums = vec![0u32; (h + 1) * stride + 1];
        for (y, row) in plane.data.chunks_exact(w * 3).take(h).enumerate() {
            let (above, below) = sums.split_at_mut((y + 1) * stride);
            let above = &above[y * stride..];
            let below = &mut below[..stride];
            let mut run = [0u32; 3];
            for (x, px) in row.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    run[c] = run[c].wrapping_add(px[c] as u32);
                    below[(x + 1) * 3 + c] = above[(x + 1) * 3 + c].wrapping_add(run[c]);
                }
            }
        }
        Self { plane, sums }
    }
}

impl AreaSource for Integral<'_> {
    fn width(&self) -> usize {
        self.plane.width
    }
    fn height(&self) -> usize {
        self.plane.height
    }

    fn resample_normalized_hwc(&self, region: Region, out_w: usize, out_h: usize, dst: &mut Vec<f32>) {
        debug_assert!(region.w > 0 && region.h > 0 && out_w > 0 && out_h > 0);
        debug_assert!(region.x0 + region.w <= self.plane.width && region.y0 + region.h <= self.plane.height);
        if (region.h / out_h + 2) * (region.w / out_w + 2) > EXACT_WINDOW {
            return resample_normalized_hwc(&self.plane, region, out_w, out_h, dst);
        }
        let stride = (self.plane.width + 1) * 3;
        let line = out_w * 3;
        // Per output pixel: its window's first and last+1 table column, as
        // the offsets of their first channel; per output value: the
        // window's width.
        let mut cols = Vec::with_capacity(out_w);
        let mut kw = Vec::with_capacity(line);
        for j in 0..out_w {
            let (w0, w1) = window(j, out_w, region.w);
            cols.push(((region.x0 + w0) * 3, (region.x0 + w1) * 3));
            kw.extend([(w1 - w0) as f32; 3]);
        }
        let base = dst.len();
        dst.resize(base + line * out_h, 0.0);
        // A pixel's three sums are taken as four lanes (one value of slack
        // for the last pixel's fourth).
        let mut sums = vec![0f32; line + 1];
        for (oy, out) in dst[base..].chunks_exact_mut(line).enumerate() {
            let (h0, h1) = window(oy, out_h, region.h);
            // Each table row with the next value (or the table's slack).
            let top = &self.sums[(region.y0 + h0) * stride..][..stride + 1];
            let bottom = &self.sums[(region.y0 + h1) * stride..][..stride + 1];
            let four = |row: &[u32], at: usize| -> [u32; 4] { row[at..at + 4].try_into().unwrap() };
            for (j, &(a, b)) in cols.iter().enumerate() {
                let (ta, tb, ba, bb) = (four(top, a), four(top, b), four(bottom, a), four(bottom, b));
                // A window's sum is below 2^24 (`EXACT_WINDOW`), so as an
                // `i32` it converts to the same f32 as the `u32` would.
                let s: [f32; 4] = std::array::from_fn(|l| bb[l].wrapping_sub(ba[l]).wrapping_sub(tb[l]).wrapping_add(ta[l]) as i32 as f32);
                sums[3 * j..3 * j + 4].copy_from_slice(&s);
            }
            normalize_row(crate::simd::simd_level(), out, &sums[..line], (h1 - h0) as f32, &kw);
        }
    }
}

crate::simd::simd_kernel! {
/// `out[i] = normalize(sums[i] / kh / kw[i])`, vectorised (the divisions
/// are the same f32 operations as the scalar reference, so bit-identical).
fn normalize_row(out: &mut [f32], sums: &[f32], kh: f32, kw: &[f32]) {
    for ((o, s), k) in out.iter_mut().zip(sums).zip(kw) {
        *o = normalize(s / kh / k);
    }
}
}

/// MTCNN's input normalisation `(x - 127.5) * 0.0078125`.
#[inline]
pub fn normalize(v: f32) -> f32 {
    (v - 127.5) * 0.0078125
}

/// Area-resamples `region` of `src` to `out_w x out_h` and appends it,
/// normalised, in HWC order to `dst` (one network input of an NHWC batch).
pub fn resample_normalized_hwc<T: Copy + Into<f32>>(
    src: &Plane<'_, T>,
    region: Region,
    out_w: usize,
    out_h: usize,
    dst: &mut Vec<f32>,
) {
    let base = dst.len();
    dst.resize(base + 3 * out_w * out_h, 0.0);
    let out = &mut dst[base..];
    area_resample(src, region, out_w, out_h, |y, x, px| {
        let i = (y * out_w + x) * 3;
        out[i] = normalize(px[0]);
        out[i + 1] = normalize(px[1]);
        out[i + 2] = normalize(px[2]);
    });
}

/// Area-downscales a whole image to `out_w x out_h`, keeping the result in
/// f32 (no rounding back to u8): returns the HWC samples.
pub fn downscale<T: Copy + Into<f32>>(src: &Plane<'_, T>, out_w: usize, out_h: usize) -> Vec<f32> {
    let mut data = vec![0f32; out_w * out_h * 3];
    let region = Region { x0: 0, y0: 0, w: src.width, h: src.height };
    area_resample(src, region, out_w, out_h, |y, x, px| {
        let p = (y * out_w + x) * 3;
        data[p..p + 3].copy_from_slice(&px);
    });
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_input_like_adaptive_pooling() {
        // 5 -> 3: [0,2) [1,4) [3,5)
        assert_eq!(window(0, 3, 5), (0, 2));
        assert_eq!(window(1, 3, 5), (1, 4));
        assert_eq!(window(2, 3, 5), (3, 5));
        // upsampling 2 -> 4: each output cell reads one input cell
        assert_eq!((0..4).map(|i| window(i, 4, 2)).collect::<Vec<_>>(), vec![(0, 1), (0, 1), (1, 2), (1, 2)]);
    }

    #[test]
    fn integral_matches_the_reference_bit_for_bit() {
        let (w, h) = (37, 29);
        let data: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7919 + i / 5) % 256) as u8).collect();
        let plane = Plane { width: w, height: h, data: &data };
        let integral = Integral::new(plane);
        for (region, ow, oh) in [
            (Region { x0: 0, y0: 0, w, h }, 22, 17),
            (Region { x0: 0, y0: 0, w, h }, 5, 4),
            (Region { x0: 3, y0: 2, w: 20, h: 11 }, 24, 24),
            (Region { x0: 36, y0: 28, w: 1, h: 1 }, 3, 2),
            (Region { x0: 10, y0: 5, w: 27, h: 24 }, 48, 48),
        ] {
            let (mut want, mut got) = (vec![1.0], vec![1.0]);
            resample_normalized_hwc(&plane, region, ow, oh, &mut want);
            integral.resample_normalized_hwc(region, ow, oh, &mut got);
            assert_eq!(want.len(), got.len());
            for (a, b) in want.iter().zip(&got) {
                assert_eq!(a.to_bits(), b.to_bits(), "{region:?} -> {ow}x{oh}");
            }
        }
    }

    #[test]
    fn area_resample_averages_windows() {
        // 2x2 image, channel r = 0,10,20,30 -> 1x1 = mean 15
        let data: Vec<u8> = vec![0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32];
        let src = Plane { width: 2, height: 2, data: &data };
        assert_eq!(downscale(&src, 1, 1), vec![15.0, 16.0, 17.0]);
        let mut hwc = vec![7.0];
        resample_normalized_hwc(&src, Region { x0: 1, y0: 0, w: 1, h: 2 }, 1, 1, &mut hwc);
        assert_eq!(hwc, vec![7.0, normalize(20.0), normalize(21.0), normalize(22.0)]);
    }
}
