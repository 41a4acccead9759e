//! Box bookkeeping of MTCNN, following facenet-pytorch 2.6.0's
//! `detect_face` operation by operation in f32 (same rounding), so that
//! the kept candidates and their coordinates match the reference.

use super::resample::Region;

/// A candidate face box with its score and pending regression offsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// `[x1, y1, x2, y2]`.
    pub b: [f32; 4],
    /// Face probability of the last stage.
    pub score: f32,
    /// Box regression `[dx1, dy1, dx2, dy2]` (relative to the box size).
    pub reg: [f32; 4],
}

/// Non-maximum suppression like `torchvision.ops.nms`: candidates in
/// descending score order (stable: ties keep input order), a candidate is
/// dropped when its IoU with a kept one exceeds `threshold`; areas without
/// the +1. Returns the kept indices, best first.
pub fn nms_union(c: &[Candidate], threshold: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| c[b].score.total_cmp(&c[a].score));
    let area: Vec<f32> = c.iter().map(|c| (c.b[2] - c.b[0]) * (c.b[3] - c.b[1])).collect();
    let mut suppressed = vec![false; c.len()];
    let mut keep = Vec::new();
    for (oi, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let bi = c[i].b;
        for &j in &order[oi + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = c[j].b;
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = w * h;
            let iou = inter / (area[i] + area[j] - inter);
            if iou as f64 > threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// facenet-pytorch's `nms_numpy(..., 'Min')`: areas with +1, overlap =
/// intersection / smaller area, the best remaining candidate (last of a
/// stable ascending sort, so among equal scores the later one) is kept and
/// those overlapping it by more than `threshold` are dropped.
pub fn nms_min(c: &[Candidate], threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| c[a].score.total_cmp(&c[b].score));
    let area: Vec<f32> =
        c.iter().map(|c| (c.b[2] - c.b[0] + 1.0) * (c.b[3] - c.b[1] + 1.0)).collect();
    let mut keep = Vec::new();
    while let Some(i) = order.pop() {
        keep.push(i);
        let bi = c[i].b;
        order.retain(|&j| {
            let bj = c[j].b;
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0]) + 1.0).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1]) + 1.0).max(0.0);
            let o = (w * h) / area[i].min(area[j]);
            o <= threshold
        });
    }
    keep
}

/// `bbreg`: applies the regression with +1 box sizes.
pub fn bbreg(c: &mut Candidate) {
    let w = c.b[2] - c.b[0] + 1.0;
    let h = c.b[3] - c.b[1] + 1.0;
    c.b = [
        c.b[0] + c.reg[0] * w,
        c.b[1] + c.reg[1] * h,
        c.b[2] + c.reg[2] * w,
        c.b[3] + c.reg[3] * h,
    ];
}

/// The P-Net stage's regression (box sizes without the +1).
pub fn pnet_reg(c: &mut Candidate) {
    let w = c.b[2] - c.b[0];
    let h = c.b[3] - c.b[1];
    c.b = [
        c.b[0] + c.reg[0] * w,
        c.b[1] + c.reg[1] * h,
        c.b[2] + c.reg[2] * w,
        c.b[3] + c.reg[3] * h,
    ];
}

/// `rerec`: squares the box around its centre on its longer side.
pub fn rerec(c: &mut Candidate) {
    let h = c.b[3] - c.b[1];
    let w = c.b[2] - c.b[0];
    let l = w.max(h);
    let x1 = c.b[0] + w * 0.5 - l * 0.5;
    let y1 = c.b[1] + h * 0.5 - l * 0.5;
    c.b = [x1, y1, x1 + l, y1 + l];
}

/// `pad` + the crop slice `img[y-1:ey, x-1:ex]`: truncates the box to
/// integers, clamps it to the image and returns the pixel region to crop,
/// or `None` where facenet-pytorch would skip the crop (empty after clamping).
pub fn crop_region(c: &Candidate, width: usize, height: usize) -> Option<Region> {
    // `as i64` truncates toward zero like `trunc().int()` (and saturates).
    let x = (c.b[0] as i64).max(1);
    let y = (c.b[1] as i64).max(1);
    let ex = (c.b[2] as i64).min(width as i64);
    let ey = (c.b[3] as i64).min(height as i64);
    if ey > y - 1 && ex > x - 1 {
        Some(Region { x0: (x - 1) as usize, y0: (y - 1) as usize, w: (ex - x + 1) as usize, h: (ey - y + 1) as usize })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(b: [f32; 4], score: f32) -> Candidate {
        Candidate { b, score, reg: [0.0; 4] }
    }

    #[test]
    fn union_nms_keeps_the_best_of_overlapping_boxes() {
        let c = [
            cand([0.0, 0.0, 10.0, 10.0], 0.8),
            cand([1.0, 1.0, 11.0, 11.0], 0.9),
            cand([50.0, 50.0, 60.0, 60.0], 0.7),
        ];
        assert_eq!(nms_union(&c, 0.5), vec![1, 2]);
        // IoU of the first two is 81/119 = 0.68: kept at 0.7.
        assert_eq!(nms_union(&c, 0.7), vec![1, 0, 2]);
        // ties: the earlier candidate wins
        let t = [cand([0.0, 0.0, 10.0, 10.0], 1.0), cand([0.0, 0.0, 10.0, 10.5], 1.0)];
        assert_eq!(nms_union(&t, 0.5), vec![0]);
    }

    #[test]
    fn min_nms_uses_the_smaller_area() {
        // A small box inside a big one: overlap/min area = 1 -> dropped.
        let c = [cand([0.0, 0.0, 99.0, 99.0], 0.9), cand([10.0, 10.0, 19.0, 19.0], 0.95)];
        assert_eq!(nms_min(&c, 0.7), vec![1]);
        let apart = [cand([0.0, 0.0, 9.0, 9.0], 0.9), cand([20.0, 20.0, 29.0, 29.0], 0.95)];
        assert_eq!(nms_min(&apart, 0.7), vec![1, 0]);
        assert!(nms_min(&[], 0.7).is_empty());
    }

    #[test]
    fn rerec_squares_and_crop_region_clamps() {
        let mut c = cand([10.0, 20.0, 30.0, 60.0], 1.0);
        rerec(&mut c);
        assert_eq!(c.b, [0.0, 20.0, 40.0, 60.0]);
        let r = crop_region(&cand([-5.5, 3.7, 300.0, 40.2], 1.0), 100, 50).unwrap();
        // x: trunc(-5.5) = -5 -> 1; y = 3; ex = 100; ey = 40 -> cols 0..100, rows 2..40
        assert_eq!(r, Region { x0: 0, y0: 2, w: 100, h: 38 });
        assert!(crop_region(&cand([200.0, 0.0, 300.0, 10.0], 1.0), 100, 50).is_none());
        assert!(crop_region(&cand([-30.0, -30.0, -10.0, -10.0], 1.0), 100, 50).is_none());
    }
}
