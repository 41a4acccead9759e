//! 5-point face alignment: a least-squares similarity transform (Umeyama,
//! no reflection) from the detector's five landmarks to a chip template, and
//! a bilinear warp of the image into the chip.
//!
//! Pixel convention (same as OpenCV's `warpAffine` and dlib's
//! `extract_image_chip`): pixel `(x, y)` has its centre at integer
//! coordinates; chip pixel `p` samples the image at `T^-1(p)` bilinearly;
//! samples outside the image read black. All arithmetic is f64 and the result
//! is rounded half-up, so `scripts/parity/*` can reproduce chips exactly.

use crate::Landmarks;
use image::RgbImage;

/// ArcFace / InsightFace 112x112 five-point template (left eye, right eye,
/// nose tip, left and right mouth corners), used by MobileFaceNet.
pub const ARCFACE_112: Landmarks = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// Five-point template of dlib's 150x150 face chip
/// (`get_face_chip_details(shape, 150, 0.25)`), used by the dlib ResNet.
///
/// Derivation: dlib maps its 68-point mean face `m` (coordinates in 0..1) to
/// chip pixels with `size * (padding + m) / (1 + 2 * padding)`, i.e.
/// `25 + 100 * m` for size 150 and padding 0.25. The five detector landmarks
/// correspond to: eye centres = mean of the 68-point eye contours
/// (points 36-41 and 42-47: x 0.2254918 / 0.7547613, y 0.2159903 for both),
/// nose tip = point 30 (0.490127, 0.515625), mouth corners = points 48 and 54
/// (0.254149 / 0.726104, 0.780233). dlib itself fits its transform to
/// 68-point landmarks (without eyebrows and lower lip); fitting these five
/// derived points gives the same chip up to landmark noise.
pub const DLIB_150: Landmarks = [
    [47.549_18, 46.599_03],
    [100.476_13, 46.599_03],
    [74.0127, 76.5625],
    [50.4149, 103.0233],
    [97.6104, 103.0233],
];

/// A 2-D affine map `[a, b, tx, c, d, ty]`: `x' = a x + b y + tx`,
/// `y' = c x + d y + ty`.
pub type Affine = [f64; 6];

/// Least-squares similarity transform (rotation, uniform scale, translation;
/// no reflection) mapping `src` points onto `dst` points (Umeyama 1991).
/// Returns `None` when the source points are degenerate (all equal).
pub fn similarity_transform(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<Affine> {
    let n = src.len().min(dst.len());
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mean = |p: &[[f32; 2]]| {
        let (sx, sy) = p[..n].iter().fold((0.0, 0.0), |(x, y), q| (x + q[0] as f64, y + q[1] as f64));
        (sx / nf, sy / nf)
    };
    let (smx, smy) = mean(src);
    let (dmx, dmy) = mean(dst);
    // For 2-D similarity without reflection the optimum has a closed form:
    // with centred points s, d: a = sum(s.d)/|s|^2, b = sum(s x d)/|s|^2.
    let (mut sxx, mut dot, mut cross) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (sx, sy) = (src[i][0] as f64 - smx, src[i][1] as f64 - smy);
        let (dx, dy) = (dst[i][0] as f64 - dmx, dst[i][1] as f64 - dmy);
        sxx += sx * sx + sy * sy;
        dot += sx * dx + sy * dy;
        cross += sx * dy - sy * dx;
    }
    if !sxx.is_finite() || sxx <= 1e-12 || !dot.is_finite() || !cross.is_finite() {
        return None;
    }
    let (a, b) = (dot / sxx, cross / sxx);
    // x' = a x - b y + tx ; y' = b x + a y + ty
    let tx = dmx - (a * smx - b * smy);
    let ty = dmy - (b * smx + a * smy);
    Some([a, -b, tx, b, a, ty])
}

/// Inverse of an affine map (`None` if singular).
pub fn invert(m: &Affine) -> Option<Affine> {
    let det = m[0] * m[4] - m[1] * m[3];
    if det.abs() < 1e-12 || !det.is_finite() {
        return None;
    }
    let (a, b, c, d) = (m[4] / det, -m[1] / det, -m[3] / det, m[0] / det);
    Some([a, b, -(a * m[2] + b * m[5]), c, d, -(c * m[2] + d * m[5])])
}

/// Warps `img` into a `width` x `height` chip: chip pixel `(x, y)` takes the
/// bilinear sample of `img` at `to_image(x, y)` (black outside the image).
///
/// Samples whose four neighbours are all inside the image (nearly all of a
/// face chip) read the pixels straight from the buffer; the arithmetic is the
/// same for every sample (see `tests::warp_reference`).
pub fn warp_affine(img: &RgbImage, to_image: &Affine, width: u32, height: u32) -> RgbImage {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::simd::SimdLevel;
        if matches!(crate::simd::simd_level(), SimdLevel::Avx512 | SimdLevel::Avx2Vnni | SimdLevel::Avx2Fma) {
            // SAFETY: those levels are handed out only on CPUs with AVX2.
            return unsafe { x86::warp_affine_avx2(img, to_image, width, height) };
        }
    }
    warp_rows(img, to_image, width, height, bilinear)
}

/// The bilinear sample at fractions `(ax, ay)` between pixel `(x0, y0)`
/// (bytes `src[i..]`) and its right and lower neighbours (rows `row` bytes
/// apart), all four inside the image, per channel rounded half-up into
/// `dst`.
#[inline(always)]
fn bilinear(src: &[u8], i: usize, row: usize, ax: f64, ay: f64, dst: &mut [u8]) {
    let (top, bottom) = (&src[i..i + 6], &src[i + row..i + row + 6]);
    let get = |p: &[u8], o: usize| [p[o] as f64, p[o + 1] as f64, p[o + 2] as f64];
    blend([get(top, 0), get(top, 3), get(bottom, 0), get(bottom, 3)], ax, ay, dst);
}

/// Mixes the four neighbours `[top left, top right, bottom left, bottom
/// right]` at fractions `(ax, ay)`, per channel rounded half-up into `dst`.
#[inline(always)]
fn blend([p00, p10, p01, p11]: [[f64; 3]; 4], ax: f64, ay: f64, dst: &mut [u8]) {
    for c in 0..3 {
        let top = p00[c] + (p10[c] - p00[c]) * ax;
        let bot = p01[c] + (p11[c] - p01[c]) * ax;
        let v = top + (bot - top) * ay;
        // Rounded half-up: v is within 0..=255, so the saturating
        // cast of v + 0.5 is its floor, clamped.
        dst[c] = (v + 0.5) as u8;
    }
}

/// [`warp_affine`]'s loop over the chip, with `inside` computing the
/// samples whose four neighbours all lie in the image (nearly all of a face
/// chip); the others read black outside the image and mix with the same
/// arithmetic ([`blend`]). `inside` must give what [`bilinear`] gives.
#[inline(always)]
fn warp_rows(
    img: &RgbImage,
    m: &Affine,
    width: u32,
    height: u32,
    inside: impl Fn(&[u8], usize, usize, f64, f64, &mut [u8]),
) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let src: &[u8] = img.as_raw();
    let px = |x: i64, y: i64| -> [f64; 3] {
        if x < 0 || y < 0 || x >= w || y >= h {
            [0.0; 3]
        } else {
            let i = ((y * w + x) * 3) as usize;
            [src[i] as f64, src[i + 1] as f64, src[i + 2] as f64]
        }
    };
    let (wf, hf, row_bytes) = (w as f64, h as f64, (w * 3) as usize);
    // Black unless a sample lands inside; every row written in place.
    let mut out = vec![0u8; width as usize * height as usize * 3];
    for (oy, line) in out.chunks_exact_mut(width as usize * 3).enumerate() {
        let fy = oy as f64;
        // `m[0] * fx + m[1] * fy + m[2]`, its `fy` terms once per row.
        let (ry, cy) = (m[1] * fy, m[4] * fy);
        for (ox, dst) in line.chunks_exact_mut(3).enumerate() {
            let fx = ox as f64;
            let sx = m[0] * fx + ry + m[2];
            let sy = m[3] * fx + cy + m[5];
            if !sx.is_finite() || !sy.is_finite() || sx <= -1.0 || sy <= -1.0 || sx >= wf || sy >= hf {
                continue;
            }
            // floor() for values above -1, without a libm call.
            let x0 = if sx >= 0.0 { sx as i64 } else { -1 };
            let y0 = if sy >= 0.0 { sy as i64 } else { -1 };
            let (ax, ay) = (sx - x0 as f64, sy - y0 as f64);
            if x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h {
                inside(src, ((y0 * w + x0) * 3) as usize, row_bytes, ax, ay, dst);
            } else {
                blend([px(x0, y0), px(x0 + 1, y0), px(x0, y0 + 1), px(x0 + 1, y0 + 1)], ax, ay, dst);
            }
        }
    }
    RgbImage::from_raw(width, height, out).expect("the chip buffer has width x height pixels")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// [`warp_affine`] with the three channels of a sample in the lanes of
    /// one AVX2 register of f64: the same operations per channel as
    /// [`bilinear`] (no fused multiply-adds), so the same bytes.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn warp_affine_avx2(img: &RgbImage, m: &Affine, width: u32, height: u32) -> RgbImage {
        warp_rows(img, m, width, height, |src, i, row, ax, ay, dst| {
            // A pixel's three bytes (and one more where the buffer has it,
            // masked off) in the low lanes, as f64.
            let pixel = |at: usize| -> __m256d {
                let word = if at + 4 <= src.len() {
                    (src.as_ptr().add(at) as *const u32).read_unaligned() & 0x00ff_ffff
                } else {
                    u32::from_le_bytes([src[at], src[at + 1], src[at + 2], 0])
                };
                _mm256_cvtepi32_pd(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(word as i32)))
            };
            let (p00, p10, p01, p11) = (pixel(i), pixel(i + 3), pixel(i + row), pixel(i + row + 3));
            let (axv, ayv) = (_mm256_set1_pd(ax), _mm256_set1_pd(ay));
            let top = _mm256_add_pd(p00, _mm256_mul_pd(_mm256_sub_pd(p10, p00), axv));
            let bot = _mm256_add_pd(p01, _mm256_mul_pd(_mm256_sub_pd(p11, p01), axv));
            let v = _mm256_add_pd(top, _mm256_mul_pd(_mm256_sub_pd(bot, top), ayv));
            // Truncation of v + 0.5 (within 0.5..=255.5), as the scalar cast.
            let ints = _mm256_cvttpd_epi32(_mm256_add_pd(v, _mm256_set1_pd(0.5)));
            let bytes = _mm_cvtsi128_si32(_mm_packus_epi16(_mm_packus_epi32(ints, ints), _mm_setzero_si128())) as u32;
            dst.copy_from_slice(&bytes.to_le_bytes()[..3]);
        })
    }
}

/// Aligns a face: fits the similarity transform from `landmarks` to
/// `template` (chip coordinates) and warps a `size` x `size` chip.
/// Degenerate landmarks (all at one point) fall back to a plain resize of the
/// whole image so that callers always get a chip.
pub fn align_face(img: &RgbImage, landmarks: &Landmarks, template: &Landmarks, size: u32) -> RgbImage {
    match similarity_transform(landmarks, template).and_then(|m| invert(&m)) {
        Some(to_image) => warp_affine(img, &to_image, size, size),
        None => image::imageops::resize(img, size, size, image::imageops::FilterType::Triangle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{with_level, SimdLevel};
    use image::Rgb;

    #[test]
    fn recovers_a_known_similarity() {
        let (s, th, tx, ty) = (1.7f64, 0.3f64, 12.0, -4.0);
        let m: Affine = [s * th.cos(), -s * th.sin(), tx, s * th.sin(), s * th.cos(), ty];
        let src = ARCFACE_112;
        let dst: Vec<[f32; 2]> = src
            .iter()
            .map(|p| {
                let (x, y) = (p[0] as f64, p[1] as f64);
                [(m[0] * x + m[1] * y + m[2]) as f32, (m[3] * x + m[4] * y + m[5]) as f32]
            })
            .collect();
        let got = similarity_transform(&src, &dst).unwrap();
        for i in 0..6 {
            assert!((got[i] - m[i]).abs() < 1e-3, "{got:?} vs {m:?}");
        }
        let inv = invert(&got).unwrap();
        let (x, y) = (10.0, 20.0);
        let (u, v) = (got[0] * x + got[1] * y + got[2], got[3] * x + got[4] * y + got[5]);
        let (bx, by) = (inv[0] * u + inv[1] * v + inv[2], inv[3] * u + inv[4] * v + inv[5]);
        assert!((bx - x).abs() < 1e-9 && (by - y).abs() < 1e-9);
    }

    #[test]
    fn identity_warp_copies_pixels_and_blackens_outside() {
        let img = RgbImage::from_fn(8, 6, |x, y| Rgb([(x * 30) as u8, (y * 40) as u8, 7]));
        let chip = warp_affine(&img, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 10, 6);
        for y in 0..6 {
            for x in 0..8 {
                assert_eq!(chip.get_pixel(x, y), img.get_pixel(x, y));
            }
        }
        assert_eq!(chip.get_pixel(9, 0).0, [0, 0, 0]);
        // half-pixel shift interpolates
        let chip = warp_affine(&img, &[1.0, 0.0, 0.5, 0.0, 1.0, 0.0], 4, 1);
        assert_eq!(chip.get_pixel(0, 0).0[0], 15);
    }

    /// The warp written plainly: `floor`, clamping and a bounds check per
    /// neighbour.
    fn warp_reference(img: &RgbImage, m: &Affine, width: u32, height: u32) -> RgbImage {
        let (w, h) = (img.width() as i64, img.height() as i64);
        let px = |x: i64, y: i64| -> [f64; 3] {
            if x < 0 || y < 0 || x >= w || y >= h {
                [0.0; 3]
            } else {
                img.get_pixel(x as u32, y as u32).0.map(f64::from)
            }
        };
        RgbImage::from_fn(width, height, |ox, oy| {
            let (fx, fy) = (ox as f64, oy as f64);
            let sx = m[0] * fx + m[1] * fy + m[2];
            let sy = m[3] * fx + m[4] * fy + m[5];
            if !sx.is_finite() || !sy.is_finite() || sx <= -1.0 || sy <= -1.0 || sx >= w as f64 || sy >= h as f64 {
                return Rgb([0, 0, 0]);
            }
            let (x0, y0) = (sx.floor(), sy.floor());
            let (ax, ay) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let (p00, p10, p01, p11) = (px(x0, y0), px(x0 + 1, y0), px(x0, y0 + 1), px(x0 + 1, y0 + 1));
            let mut out = [0u8; 3];
            for c in 0..3 {
                let top = p00[c] + (p10[c] - p00[c]) * ax;
                let bot = p01[c] + (p11[c] - p01[c]) * ax;
                let v = top + (bot - top) * ay;
                out[c] = (v + 0.5).floor().clamp(0.0, 255.0) as u8;
            }
            Rgb(out)
        })
    }

    #[test]
    fn warp_matches_the_plain_reference_inside_across_and_outside_the_edges() {
        // Pixels from a fixed pseudo-random sequence, extremes included.
        let mut state = 0x2545_f491_u32;
        let img = RgbImage::from_fn(37, 29, |x, y| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            match (x + y) % 7 {
                0 => Rgb([0, 255, 0]),
                1 => Rgb([255, 0, 255]),
                _ => Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8]),
            }
        });
        let transforms: [Affine; 6] = [
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            [1.0, 0.0, -0.5, 0.0, 1.0, -0.75],
            // Rotated and scaled, part of the chip outside the image.
            [0.31, -0.12, 5.3, 0.12, 0.31, -2.2],
            [1.7, 0.4, -9.9, -0.4, 1.7, 3.1],
            // Samples just above -1 and just below the far edges.
            [0.0, 0.0, -0.999_999, 0.0, 0.0, 28.999],
            [0.25, 0.0, 36.5, 0.0, 0.25, -0.999],
        ];
        // A real face too: the chip is byte for byte the reference's.
        let face = invert(&similarity_transform(&[[9.0, 11.0], [27.0, 10.5], [18.0, 17.0], [11.0, 23.0], [26.0, 22.5]], &ARCFACE_112).unwrap()).unwrap();
        // Every level this CPU runs: the vector path (AVX2 and up) and the scalar one.
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            with_level(level, || {
                for (m, side) in transforms.iter().map(|m| (m, (56, 48))).chain([(&face, (112, 112))]) {
                    let (got, want) = (warp_affine(&img, m, side.0, side.1), warp_reference(&img, m, side.0, side.1));
                    assert_eq!(got, want, "{level}: transform {m:?}");
                }
            });
        }
    }

    #[test]
    fn degenerate_landmarks_do_not_panic() {
        let img = RgbImage::new(20, 20);
        let chip = align_face(&img, &[[5.0, 5.0]; 5], &ARCFACE_112, 112);
        assert_eq!(chip.dimensions(), (112, 112));
        let chip = align_face(&img, &[[f32::NAN, 5.0]; 5], &ARCFACE_112, 112);
        assert_eq!(chip.dimensions(), (112, 112));
    }

    #[test]
    fn dlib_template_matches_its_derivation() {
        let chip = |m: f64| 25.0 + 100.0 * m;
        let le_x = (0.121737 + 0.187122 + 0.265825 + 0.334606 + 0.260918 + 0.182743) / 6.0;
        let re_x = (0.645647 + 0.714428 + 0.793132 + 0.858516 + 0.79751 + 0.719335) / 6.0;
        let eye_y = (0.216423 + 0.178758 + 0.179852 + 0.231733 + 0.245099 + 0.244077) / 6.0;
        let want = [
            [chip(le_x), chip(eye_y)],
            [chip(re_x), chip(eye_y)],
            [chip(0.490127), chip(0.515625)],
            [chip(0.254149), chip(0.780233)],
            [chip(0.726104), chip(0.780233)],
        ];
        for (w, g) in want.iter().zip(DLIB_150.iter()) {
            assert!((w[0] - g[0] as f64).abs() < 1e-3 && (w[1] - g[1] as f64).abs() < 1e-3, "{w:?} vs {g:?}");
        }
    }
}
