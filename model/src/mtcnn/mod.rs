//! MTCNN face detection (Zhang et al. 2016) reproducing facenet-pytorch
//! 2.6.0's `detect_face`: image pyramid with area resampling, P-Net with
//! per-scale NMS 0.5 then NMS 0.7, R-Net on 24x24 crops with NMS 0.7, O-Net
//! on 48x48 crops with landmarks and a final "Min" NMS 0.7.
//!
//! Weights: `model/weights/mtcnn.safetensors`, converted from the PyPI
//! package facenet-pytorch 2.6.0 (MIT) by `scripts/weights/mtcnn.py`.

mod boxes;
mod int16_conv;
mod layers;
mod nets;
mod resample;
mod winograd;

use boxes::{bbreg, crop_region, nms_min, nms_union, pnet_reg, rerec, Candidate};
use std::time::{Duration, Instant};

use candle_core::{Device, Error, Result};
use candle_nn::VarBuilder;
use layers::{softmax2, Act};
use nets::{ONet, PNet, RNet};
use resample::{downscale, AreaSource, Integral, Plane, Region};

use crate::{BoundingBox, Face};

/// Largest detection image (pixels) resampled through a summed-area table
/// ([`Integral`], 12 bytes per pixel); larger ones (only with a raised
/// `max_side`) resample from the image directly.
const INTEGRAL_MAX_PIXELS: usize = 4 << 20;
/// Crops R-Net takes in one pass, so that the pass's activations stay in
/// the core's caches: its first layer writes 54 KB per crop, about 0.9 MB
/// for 16. All of a typical photo's 58 crops at once spilled out of them,
/// and R-Net took about 16 % longer (AVX2, model README). With the integer
/// convolutions a crop's values depend on the other crops of its pass (one
/// input scale per layer and pass), never on those of another.
const RNET_CROPS_PER_PASS: usize = 16;
/// Crops O-Net takes in one pass (see [`RNET_CROPS_PER_PASS`]): its first
/// layer writes 271 KB per crop, about 1.1 MB for 4.
const ONET_CROPS_PER_PASS: usize = 4;

/// Time spent in each MTCNN stage, summed over the calls of
/// [`Mtcnn::detect_timed`] that were given it (for profiling).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Building the image pyramid (area resampling), part of `pnet`.
    pub pyramid: Duration,
    /// P-Net on every pyramid level, with its NMS (includes `pyramid`).
    pub pnet: Duration,
    /// R-Net: cropping and resampling the candidates, the network, NMS.
    pub rnet: Duration,
    /// O-Net: cropping and resampling, the network, NMS.
    pub onet: Duration,
    /// Candidates P-Net handed to R-Net.
    pub pnet_candidates: usize,
    /// Candidates R-Net handed to O-Net.
    pub rnet_candidates: usize,
}

/// Detection parameters (defaults are facenet-pytorch's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectParams {
    /// Smallest face side searched for, in pixels of the (possibly
    /// downscaled, see `max_side`) detection image. Default 20; must be >= 8
    /// (smaller values upsample the image a lot and cost time and memory).
    pub min_face_size: f32,
    /// Score thresholds of P-, R- and O-Net. Default `[0.6, 0.7, 0.7]`.
    pub thresholds: [f32; 3],
    /// Ratio between pyramid levels, in (0, 1). Default 0.709.
    pub scale_factor: f32,
    /// Images whose longer side exceeds this are area-downscaled to it for
    /// detection; boxes and landmarks are mapped back to original pixel
    /// coordinates. Default 640; must be >= 12.
    pub max_side: u32,
    /// Run every convolution in f32, as facenet-pytorch does. By default
    /// (`false`) the direct convolutions run in 16-bit integers where the
    /// CPU has an integer kernel (x86_64 with AVX2, or AVX-512 VNNI):
    /// faster, with boxes and landmarks within a few hundredths of a pixel
    /// of the f32 ones, except where two overlapping candidates score
    /// nearly alike and rounding keeps the other one (then within about a
    /// pixel). Default `false`; [`crate::ModelConfig::with_recognizer`]
    /// sets it for the dlib ResNet. See the model README.
    pub f32_convolutions: bool,
}

impl Default for DetectParams {
    fn default() -> Self {
        Self { min_face_size: 20.0, thresholds: [0.6, 0.7, 0.7], scale_factor: 0.709, max_side: 640, f32_convolutions: false }
    }
}

impl DetectParams {
    fn validate(&self) -> Result<()> {
        if !(self.min_face_size.is_finite() && self.min_face_size >= 8.0) {
            return Err(Error::Msg(format!("min_face_size must be >= 8, got {}", self.min_face_size)));
        }
        if !(self.scale_factor > 0.0 && self.scale_factor < 1.0) {
            return Err(Error::Msg(format!("scale_factor must be in (0, 1), got {}", self.scale_factor)));
        }
        if self.thresholds.iter().any(|t| !t.is_finite()) {
            return Err(Error::Msg(format!("thresholds must be finite, got {:?}", self.thresholds)));
        }
        if self.max_side < 12 {
            return Err(Error::Msg(format!("max_side must be >= 12, got {}", self.max_side)));
        }
        Ok(())
    }
}

/// The value a Python float literal written like `v` has: facenet-pytorch
/// computes the pyramid in f64 from decimal constants (0.709, not the f32
/// nearest to it widened to f64).
fn as_python_float(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

/// The MTCNN detector: P-, R- and O-Net on one device. `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Mtcnn {
    pnet: PNet,
    rnet: RNet,
    onet: ONet,
    device: Device,
}

impl Mtcnn {
    /// Loads the three networks from `vb`, rooted at the safetensors file
    /// (tensors `pnet.*`, `rnet.*`, `onet.*`). The matmuls run on `vb`'s
    /// device, which should be `device`.
    pub fn load(vb: VarBuilder, device: &Device) -> Result<Self> {
        Ok(Self {
            pnet: PNet::load(vb.pp("pnet"))?,
            rnet: RNet::load(vb.pp("rnet"))?,
            onet: ONet::load(vb.pp("onet"))?,
            device: device.clone(),
        })
    }

    /// Detects faces in `img`. Faces come best first (descending O-Net
    /// score, the order of facenet-pytorch's final NMS), with boxes and
    /// landmarks in `img`'s pixel coordinates. No face (or an image too
    /// small to hold one) gives an empty vector.
    pub fn detect(&self, img: &image::RgbImage, params: &DetectParams) -> Result<Vec<Face>> {
        self.detect_timed(img, params, &mut StageTimes::default())
    }

    /// [`Mtcnn::detect`], adding the time each stage took to `times`.
    pub fn detect_timed(&self, img: &image::RgbImage, params: &DetectParams, times: &mut StageTimes) -> Result<Vec<Face>> {
        params.validate()?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        let src = Plane { width: w, height: h, data: img.as_raw().as_slice() };
        let max_side = params.max_side as usize;
        let longer = w.max(h);
        if longer <= max_side && w * h > INTEGRAL_MAX_PIXELS {
            return self.detect_plane(&src, params, times);
        }
        if longer <= max_side {
            let t = Instant::now();
            let integral = Integral::new(src);
            times.pyramid += t.elapsed();
            times.pnet += t.elapsed();
            return self.detect_plane(&integral, params, times);
        }
        let ratio = max_side as f64 / longer as f64;
        let dw = ((w as f64 * ratio).round() as usize).clamp(1, max_side);
        let dh = ((h as f64 * ratio).round() as usize).clamp(1, max_side);
        let small_data = downscale(&src, dw, dh);
        let small = Plane { width: dw, height: dh, data: small_data.as_slice() };
        let (sx, sy) = (w as f32 / dw as f32, h as f32 / dh as f32);
        let mut faces = self.detect_plane(&small, params, times)?;
        for f in &mut faces {
            f.bbox = BoundingBox { x1: f.bbox.x1 * sx, y1: f.bbox.y1 * sy, x2: f.bbox.x2 * sx, y2: f.bbox.y2 * sy };
            for p in &mut f.landmarks {
                *p = [p[0] * sx, p[1] * sy];
            }
        }
        Ok(faces)
    }

    /// The device the detector was loaded for.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn detect_plane<A: AreaSource>(
        &self,
        img: &A,
        params: &DetectParams,
        times: &mut StageTimes,
    ) -> Result<Vec<Face>> {
        let t = Instant::now();
        let cands = self.stage_pnet(img, params, times)?;
        times.pnet += t.elapsed();
        times.pnet_candidates += cands.len();
        if cands.is_empty() {
            return Ok(Vec::new());
        }
        let t = Instant::now();
        let cands = self.stage_rnet(img, cands, params)?;
        times.rnet += t.elapsed();
        times.rnet_candidates += cands.len();
        if cands.is_empty() {
            return Ok(Vec::new());
        }
        let t = Instant::now();
        let faces = self.stage_onet(img, cands, params);
        times.onet += t.elapsed();
        faces
    }

    /// Pyramid scales exactly as `detect_face` computes them (f64).
    fn scales(width: usize, height: usize, params: &DetectParams) -> Vec<f64> {
        let m = 12.0 / as_python_float(params.min_face_size);
        let factor = as_python_float(params.scale_factor);
        let mut minl = width.min(height) as f64 * m;
        let mut scale = m;
        let mut scales = Vec::new();
        while minl >= 12.0 {
            scales.push(scale);
            scale *= factor;
            minl *= factor;
        }
        scales
    }

    fn stage_pnet<A: AreaSource>(
        &self,
        img: &A,
        params: &DetectParams,
        times: &mut StageTimes,
    ) -> Result<Vec<Candidate>> {
        let (w, h) = (img.width(), img.height());
        let full = Region { x0: 0, y0: 0, w, h };
        let mut picked = Vec::new();
        for scale in Self::scales(w, h, params) {
            let hs = (h as f64 * scale + 1.0) as usize;
            let ws = (w as f64 * scale + 1.0) as usize;
            let t = Instant::now();
            let mut input = Vec::with_capacity(hs * ws * 3);
            img.resample_normalized_hwc(full, ws, hs, &mut input);
            times.pyramid += t.elapsed();
            let out = self.pnet.forward(&Act { n: 1, h: hs, w: ws, c: 3, data: input }, !params.f32_convolutions)?;
            let cands = pnet_candidates(&out, scale as f32, params.thresholds[0]);
            picked.extend(nms_union(&cands, 0.5).into_iter().map(|i| cands[i]));
        }
        let mut cands: Vec<Candidate> = nms_union(&picked, 0.7).into_iter().map(|i| picked[i]).collect();
        for c in &mut cands {
            pnet_reg(c);
            rerec(c);
        }
        Ok(cands)
    }

    /// Crops every candidate (skipping those facenet-pytorch cannot crop),
    /// area-resamples it to `size x size`, and runs `net` on the crops,
    /// `per_pass` at a time. Returns the cropped candidates, in order, with
    /// `net`'s outputs for all of them, in order (`net` returns its pass's).
    fn through_crops<A: AreaSource, O>(
        img: &A,
        cands: Vec<Candidate>,
        size: usize,
        per_pass: usize,
        mut net: impl FnMut(&Act) -> Result<Vec<O>>,
    ) -> Result<(Vec<Candidate>, Vec<O>)> {
        let kept: Vec<(Candidate, Region)> =
            cands.into_iter().filter_map(|c| crop_region(&c, img.width(), img.height()).map(|r| (c, r))).collect();
        let mut outs = Vec::with_capacity(kept.len());
        let mut data = Vec::with_capacity(per_pass.min(kept.len()) * 3 * size * size);
        for pass in kept.chunks(per_pass) {
            data.clear();
            for &(_, r) in pass {
                img.resample_normalized_hwc(r, size, size, &mut data);
            }
            let batch = Act { n: pass.len(), h: size, w: size, c: 3, data: std::mem::take(&mut data) };
            outs.extend(net(&batch)?);
            data = batch.data;
        }
        Ok((kept.into_iter().map(|(c, _)| c).collect(), outs))
    }

    fn stage_rnet<A: AreaSource>(&self, img: &A, cands: Vec<Candidate>, params: &DetectParams) -> Result<Vec<Candidate>> {
        let integers = !params.f32_convolutions;
        let (cands, features) = Self::through_crops(img, cands, 24, RNET_CROPS_PER_PASS, |batch| self.rnet.features(batch, integers))?;
        let out = self.rnet.head(features, cands.len(), integers)?;
        let passed: Vec<Candidate> = cands
            .iter()
            .zip(&out)
            .filter(|(_, o)| o.score > params.thresholds[1])
            .map(|(c, o)| Candidate { b: c.b, score: o.score, reg: o.reg })
            .collect();
        let mut out: Vec<Candidate> = nms_union(&passed, 0.7).into_iter().map(|i| passed[i]).collect();
        for c in &mut out {
            bbreg(c);
            rerec(c);
        }
        Ok(out)
    }

    fn stage_onet<A: AreaSource>(&self, img: &A, cands: Vec<Candidate>, params: &DetectParams) -> Result<Vec<Face>> {
        let integers = !params.f32_convolutions;
        let (cands, features) = Self::through_crops(img, cands, 48, ONET_CROPS_PER_PASS, |batch| self.onet.features(batch, integers))?;
        let out = self.onet.head(features, cands.len(), integers)?;
        let mut passed = Vec::new();
        let mut marks = Vec::new();
        for (c, o) in cands.iter().zip(&out) {
            if o.score <= params.thresholds[2] {
                continue;
            }
            let mut c = Candidate { b: c.b, score: o.score, reg: o.reg };
            // Landmarks relative to the (pre-regression) box, with +1 sizes.
            let bw = c.b[2] - c.b[0] + 1.0;
            let bh = c.b[3] - c.b[1] + 1.0;
            let mut lm = [[0f32; 2]; 5];
            for (k, p) in lm.iter_mut().enumerate() {
                *p = [bw * o.points[k] + c.b[0] - 1.0, bh * o.points[5 + k] + c.b[1] - 1.0];
            }
            bbreg(&mut c);
            passed.push(c);
            marks.push(lm);
        }
        Ok(nms_min(&passed, 0.7)
            .into_iter()
            .map(|i| {
                let c = &passed[i];
                Face {
                    bbox: BoundingBox { x1: c.b[0], y1: c.b[1], x2: c.b[2], y2: c.b[3] },
                    score: c.score,
                    landmarks: marks[i],
                }
            })
            .collect())
    }
}

/// `generateBoundingBox` + the P-Net softmax: every output cell whose face
/// probability is >= `threshold`, in row-major order, as a 12x12 window
/// mapped back to detection-image pixels. `out` is the P-Net output map
/// (2 logits, 4 regression channels per cell).
fn pnet_candidates(out: &Act, scale: f32, threshold: f32) -> Vec<Candidate> {
    let mut cands = Vec::new();
    for y in 0..out.h {
        for x in 0..out.w {
            let v = &out.data[(y * out.w + x) * 6..][..6];
            let p = softmax2(v[0], v[1]);
            if p >= threshold {
                let (fx, fy) = (x as f32, y as f32);
                cands.push(Candidate {
                    b: [
                        ((2.0 * fx + 1.0) / scale).floor(),
                        ((2.0 * fy + 1.0) / scale).floor(),
                        ((2.0 * fx + 12.0) / scale).floor(),
                        ((2.0 * fy + 12.0) / scale).floor(),
                    ],
                    score: p,
                    reg: [v[2], v[3], v[4], v[5]],
                });
            }
        }
    }
    cands
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_matches_facenet_pytorch() {
        // facenet-pytorch on 250x250 with the defaults: 0.6 * 0.709^k, k = 0..7.
        let s = Mtcnn::scales(250, 250, &DetectParams::default());
        assert_eq!(s.len(), 8);
        assert_eq!(s[0], 0.6);
        assert_eq!(s[1], 0.6 * 0.709);
        assert!(Mtcnn::scales(11, 400, &DetectParams::default()).is_empty());
        assert_eq!(as_python_float(0.709), 0.709f64);
    }

    #[test]
    fn bad_params_are_rejected() {
        let bad = [
            DetectParams { min_face_size: 0.0, ..Default::default() },
            DetectParams { scale_factor: 1.0, ..Default::default() },
            DetectParams { max_side: 0, ..Default::default() },
            DetectParams { thresholds: [f32::NAN, 0.7, 0.7], ..Default::default() },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
        }
        assert!(DetectParams::default().validate().is_ok());
    }
}
