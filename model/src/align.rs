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
use image::{Rgb, RgbImage};

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
pub fn warp_affine(img: &RgbImage, to_image: &Affine, width: u32, height: u32) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let px = |x: i64, y: i64| -> [f64; 3] {
        if x < 0 || y < 0 || x >= w || y >= h {
            [0.0; 3]
        } else {
            let p = img.get_pixel(x as u32, y as u32).0;
            [p[0] as f64, p[1] as f64, p[2] as f64]
        }
    };
    let m = to_image;
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
