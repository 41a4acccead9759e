"""Chip alignment shared by the recognizer parity scripts.

A numpy transcription of model/src/align.rs (same formulas, same order of
float64 operations, same rounding), so reference chips match the Rust chips
bit-for-bit given the same decoded image.
"""

import numpy as np

ARCFACE_112 = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
               [41.5493, 92.3655], [70.7299, 92.2041]]
DLIB_150 = [[47.54918, 46.59903], [100.47613, 46.59903], [74.0127, 76.5625],
            [50.4149, 103.0233], [97.6104, 103.0233]]


def f32(v):
    """Round like a Rust f32 constant / field, then widen to Python float (f64)."""
    return float(np.float32(v))


def similarity_transform(src, dst):
    n = len(src)
    src = [[f32(x), f32(y)] for x, y in src]
    dst = [[f32(x), f32(y)] for x, y in dst]

    def mean(p):
        sx, sy = 0.0, 0.0
        for x, y in p:
            sx, sy = sx + x, sy + y
        return sx / n, sy / n

    smx, smy = mean(src)
    dmx, dmy = mean(dst)
    sxx = dot = cross = 0.0
    for i in range(n):
        sx, sy = src[i][0] - smx, src[i][1] - smy
        dx, dy = dst[i][0] - dmx, dst[i][1] - dmy
        sxx += sx * sx + sy * sy
        dot += sx * dx + sy * dy
        cross += sx * dy - sy * dx
    a, b = dot / sxx, cross / sxx
    tx = dmx - (a * smx - b * smy)
    ty = dmy - (b * smx + a * smy)
    return [a, -b, tx, b, a, ty]


def invert(m):
    det = m[0] * m[4] - m[1] * m[3]
    a, b, c, d = m[4] / det, -m[1] / det, -m[3] / det, m[0] / det
    return [a, b, -(a * m[2] + b * m[5]), c, d, -(c * m[2] + d * m[5])]


def warp_affine(img, m, width, height):
    """img: HxWx3 uint8; m maps chip (x, y) to image coordinates."""
    h, w = img.shape[:2]
    padded = np.zeros((h + 2, w + 2, 3), dtype=np.float64)  # 1-pixel black border
    padded[1:-1, 1:-1] = img
    fy, fx = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    sx = m[0] * fx + m[1] * fy + m[2]
    sy = m[3] * fx + m[4] * fy + m[5]
    inside = np.isfinite(sx) & np.isfinite(sy) & (sx > -1.0) & (sy > -1.0) & (sx < w) & (sy < h)
    sx, sy = np.where(inside, sx, 0.0), np.where(inside, sy, 0.0)
    x0, y0 = np.floor(sx), np.floor(sy)
    ax, ay = (sx - x0)[..., None], (sy - y0)[..., None]
    xi, yi = x0.astype(np.int64) + 1, y0.astype(np.int64) + 1
    p00, p10 = padded[yi, xi], padded[yi, xi + 1]
    p01, p11 = padded[yi + 1, xi], padded[yi + 1, xi + 1]
    top = p00 + (p10 - p00) * ax
    bot = p01 + (p11 - p01) * ax
    v = top + (bot - top) * ay
    out = np.clip(np.floor(v + 0.5), 0, 255).astype(np.uint8)
    out[~inside] = 0
    return out


def align(img, landmarks, template, size):
    return warp_affine(img, invert(similarity_transform(landmarks, template)), size, size)


def synthetic_chip(size):
    """pixel(x, y, c) = (x*7 + y*13 + c*29) % 256, HxWx3 uint8."""
    y, x, c = np.meshgrid(np.arange(size), np.arange(size), np.arange(3), indexing="ij")
    return ((x * 7 + y * 13 + c * 29) % 256).astype(np.uint8)
