#!/usr/bin/env python3
"""Run the reference MTCNN (facenet-pytorch 2.6.0 under PyTorch) and write model/tests/golden/mtcnn.json.

Usage: python scripts/parity/mtcnn_reference.py [--shared ../shared] [--out model/tests/golden/mtcnn.json]

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
`detect_face` returns them (its final NMS order: best score first). Images are
decoded with PIL and converted to RGB.
"""

import argparse
import datetime
import json
import os
import sys

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
    entries = []
    for rel in IMAGES:
        path = os.path.join(args.shared, rel)
        img = Image.open(path).convert("RGB")
        with torch.no_grad():
            boxes, points = detect_face(img, mtcnn.min_face_size, mtcnn.pnet, mtcnn.rnet, mtcnn.onet,
                                        mtcnn.thresholds, mtcnn.factor, "cpu")
        boxes, points = np.asarray(boxes[0], dtype=np.float64), np.asarray(points[0], dtype=np.float64)
        faces = [{
            "box": [float(v) for v in b[:4]],
            "score": float(b[4]),
            "landmarks": [[float(x), float(y)] for x, y in p],
        } for b, p in zip(boxes, points)]
        print(f"{rel}: {img.size[0]}x{img.size[1]}, {len(faces)} face(s)", file=sys.stderr)
        entries.append({"image": rel, "width": img.size[0], "height": img.size[1], "faces": faces})

    # A flat grey picture: the reference finds no face (checked here, asserted in Rust).
    with torch.no_grad():
        flat = Image.new("RGB", (200, 150), (128, 128, 128))
        b, _ = detect_face(flat, mtcnn.min_face_size, mtcnn.pnet, mtcnn.rnet, mtcnn.onet,
                           mtcnn.thresholds, mtcnn.factor, "cpu")
        assert len(b[0]) == 0, "reference found a face in a flat image"

    golden = {
        "reference": f"facenet-pytorch {metadata.version('facenet-pytorch')} "
                     f"detect_face, torch {torch.__version__}, numpy {np.__version__}, "
                     f"Pillow {Image.__version__} (decode: PIL, convert RGB), CPU, 1 thread",
        "generated_by": "scripts/parity/mtcnn_reference.py",
        "generated_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "params": {"min_face_size": mtcnn.min_face_size, "thresholds": mtcnn.thresholds,
                   "scale_factor": mtcnn.factor},
        "images": entries,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(golden, fh, indent=1)
        fh.write("\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
