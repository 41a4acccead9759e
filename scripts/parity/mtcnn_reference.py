#!/usr/bin/env python3
"""Run the reference MTCNN (facenet-pytorch 2.6.0 under PyTorch) and write model/tests/golden/mtcnn.json.

Usage (from the repository root):
    /tmp/ref-venv/bin/python scripts/parity/mtcnn_reference.py [--shared ../shared] \
        [--out model/tests/golden/mtcnn.json]

Needs a separate environment with the reference stack, e.g.:
    python3 -m venv /tmp/ref-venv
    /tmp/ref-venv/bin/pip install torch==2.2.2 torchvision==0.17.2 "numpy<2" "pillow==10.2.0" \
        requests tqdm safetensors
    /tmp/ref-venv/bin/pip install --no-deps facenet-pytorch==2.6.0
(PyPI's torch wheel pulls the nvidia-* CUDA runtime packages; the reference runs on the CPU.)

For every image (paths relative to the shared dir) the golden file holds what
`facenet_pytorch.models.utils.detect_face.detect_face` returns with MTCNN's
defaults (min_face_size 20, thresholds [0.6, 0.7, 0.7], factor 0.709): boxes
[x1, y1, x2, y2], score and 5 landmarks [[x, y] x 5], in the order
`detect_face` returns them (its final NMS order: best score first), twice:

* `faces`: on the exact RGB pixels the Rust `image` crate decodes (dumped by
  `cargo run -p facefleet-model --example mtcnn_bench -- --dump-rgb`), so that
  the Rust test compares the detectors on identical input; `rgb_fnv1a64` is a
  checksum of those pixels (the test checks that its decoder still agrees);
* `faces_pil`: on PIL's decode (`Image.open(p).convert("RGB")`, libjpeg-turbo),
  i.e. what a Python user of facenet-pytorch gets. JPEG decoders differ by a
  few grey levels (`pil_vs_rust_decode_max_abs_diff`), which moves boxes and
  landmarks by up to a few pixels.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image

IMAGES = [
    # single faces
    "datasets/lfw-dev/Abdullah_Gul/Abdullah_Gul_0001.jpg",
    "datasets/lfw-dev/Angelina_Jolie/Angelina_Jolie_0001.jpg",
    "datasets/lfw-dev/Serena_Williams/Serena_Williams_0001.jpg",
    "datasets/lfw-dev/Tom_Cruise/Tom_Cruise_0001.jpg",
    # several faces
    "datasets/lfw-dev/Bill_Clinton/Bill_Clinton_0004.jpg",
    "datasets/lfw-dev/Ariel_Sharon/Ariel_Sharon_0004.jpg",
    "datasets/lfw-dev/Condoleezza_Rice/Condoleezza_Rice_0005.jpg",
    # 64x64 crops of the CSE546 data set
    "datasets/cse546/face_images_100/test_00.jpg",
    "datasets/cse546/face_images_100/test_01.jpg",
    "datasets/cse546/face_images_100/test_02.jpg",
]


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def rust_decoded(paths):
    """Decode `paths` with the Rust image crate (via the mtcnn_bench example)."""
    out = tempfile.mkdtemp(prefix="facefleet-rgb-")
    subprocess.run(["cargo", "run", "--quiet", "-p", "facefleet-model", "--example", "mtcnn_bench", "--",
                    "--runs", "1", "--dump-rgb", out, *paths], check=True, stdout=subprocess.DEVNULL)
    return [open(os.path.join(out, f"{i}.rgb"), "rb").read() for i in range(len(paths))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
    ap.add_argument("--out", default="model/tests/golden/mtcnn.json")
    args = ap.parse_args()

    from importlib import metadata

    from facenet_pytorch import MTCNN
    from facenet_pytorch.models.utils.detect_face import detect_face

    torch.set_num_threads(1)
    mtcnn = MTCNN(device="cpu")

    def detect(img):
        with torch.no_grad():
            boxes, points = detect_face(img, mtcnn.min_face_size, mtcnn.pnet, mtcnn.rnet, mtcnn.onet,
                                        mtcnn.thresholds, mtcnn.factor, "cpu")
        boxes, points = np.asarray(boxes[0], dtype=np.float64), np.asarray(points[0], dtype=np.float64)
        return [{
            "box": [round(float(v), 4) for v in b[:4]],
            "score": float(b[4]),
            "landmarks": [[round(float(x), 4), round(float(y), 4)] for x, y in p],
        } for b, p in zip(boxes, points)]

    paths = [os.path.abspath(os.path.join(args.shared, rel)) for rel in IMAGES]
    rust_rgb = rust_decoded(paths)
    entries = []
    for rel, path, raw in zip(IMAGES, paths, rust_rgb):
        pil = Image.open(path).convert("RGB")
        w, h = pil.size
        rust = np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
        diff = np.abs(np.asarray(pil).astype(int) - rust.astype(int))
        faces = detect(Image.fromarray(rust))
        faces_pil = detect(pil)
        print(f"{rel}: {w}x{h}, {len(faces)} face(s) ({len(faces_pil)} with PIL's decode), "
              f"decode max |diff| {diff.max()}", file=sys.stderr)
        entries.append({"image": rel, "width": w, "height": h, "rgb_fnv1a64": f"{fnv1a64(raw):016x}",
                        "pil_vs_rust_decode_max_abs_diff": int(diff.max()),
                        "faces": faces, "faces_pil": faces_pil})

    # A flat grey picture: the reference finds no face (checked here, asserted in Rust).
    with torch.no_grad():
        flat = Image.new("RGB", (200, 150), (128, 128, 128))
        b, _ = detect_face(flat, mtcnn.min_face_size, mtcnn.pnet, mtcnn.rnet, mtcnn.onet,
                           mtcnn.thresholds, mtcnn.factor, "cpu")
        assert len(b[0]) == 0, "reference found a face in a flat image"

    golden = {
        "reference": f"facenet-pytorch {metadata.version('facenet-pytorch')} "
                     f"detect_face, torch {torch.__version__}, numpy {np.__version__}, "
                     f"Pillow {Image.__version__}, CPU, 1 thread",
        "generated_by": "scripts/parity/mtcnn_reference.py",
        "generated_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "params": {"min_face_size": mtcnn.min_face_size, "thresholds": mtcnn.thresholds,
                   "scale_factor": mtcnn.factor},
        "images": entries,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    # one face per line: faces are swapped for placeholders, dumped compactly
    compact = {}
    for e in entries:
        for key in ("faces", "faces_pil"):
            for i, f in enumerate(e[key]):
                tag = f"@face{len(compact)}@"
                compact[tag] = json.dumps(f)
                e[key][i] = tag
    text = json.dumps(golden, indent=1)
    for tag, face in compact.items():
        text = text.replace(f'"{tag}"', face)
    with open(args.out, "w") as fh:
        fh.write(text + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
