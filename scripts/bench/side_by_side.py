#!/usr/bin/env python3
"""facefleet and face_recognition (dlib), side by side in one run.

Both recognize the same photos, one thread each, interleaved photo by photo so
that a busy or noisy machine slows them alike. Each side does the whole job for
one photo: decode the file, find the faces, embed them and match against the
same gallery (the first photo of the first N people of lfw-dev, each enrolled
from that photo). facefleet runs once per SIMD level listed in --levels (the
recognize_bench example in --serve mode); face_recognition runs its defaults
(HOG detector, upsample 1, 5-point landmarks, ResNet, tolerance 0.6).

Setup (once): a venv with the peer's PyPI packages, none compiled here:
    pip install dlib-bin && pip install --no-deps face_recognition face_recognition_models
    pip install numpy pillow
Run:
    cargo build --release -p facefleet-model --example recognize_bench
    .venv/bin/python scripts/bench/side_by_side.py [--people 20] [--rounds 5] [--levels avx512,avx2]
        [--min-faces 20,40]

--min-faces runs facefleet once per smallest face side (pixels; facefleet's
default is 20, face_recognition's defaults find faces from about 40: dlib's
80-pixel HOG window on the photo upsampled once), all in the same interleaved
run, so that both sides can also be compared searching the same face sizes.

Prints the median and minimum per photo for each side, and how many times faster
facefleet's median is than face_recognition's. It measures speed; accuracy on the
same data is verify_lfw's job.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# One thread for the peer too (numpy/BLAS and dlib).
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

ROOT = Path(__file__).resolve().parents[2]


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--levels", default="avx512,avx2", help="facefleet SIMD levels, comma separated: avx512, avxvnni, avx2, neon, baseline (auto = the CPU's best)")
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared/datasets/lfw-dev"))
    ap.add_argument("--bench", default=str(ROOT / "target/release/examples/recognize_bench"))
    ap.add_argument("--min-faces", default="20",
                    help="facefleet smallest face sides in pixels, comma separated, one facefleet per value (default 20)")
    args = ap.parse_args()

    try:
        import face_recognition  # noqa: the peer
        import dlib
    except ImportError as e:
        sys.exit(f"face_recognition is not installed ({e}); see this script's docstring for the two pip commands")
    dataset = Path(args.dataset)
    if not dataset.is_dir():
        sys.exit(f"the shared lfw-dev set is missing at {dataset}")
    if not Path(args.bench).exists():
        sys.exit(f"{args.bench} is missing: cargo build --release -p facefleet-model --example recognize_bench")

    people = sorted(p for p in dataset.iterdir() if p.is_dir())[: args.people]
    photos = [sorted(p.glob("*.jpg"))[0] for p in people]
    levels = [l for l in args.levels.split(",") if l]
    # Each value once (a repeated one would mix two processes' timings in one row).
    min_faces = list(dict.fromkeys(m.strip() for m in args.min_faces.split(",") if m.strip()))

    # facefleet: one long-lived process per smallest face, gallery = these photos.
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    servers = {}
    for m in min_faces:
        ff = subprocess.Popen([args.bench, "--serve", "--min-face", m, *map(str, photos)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
        ready = ff.stdout.readline().strip()
        if not ready.startswith("ready"):
            sys.exit(f"recognize_bench --serve did not start: {ready!r}")
        servers[m] = ff
    # Sides: (label, smallest face, SIMD level); the label names the smallest
    # face only when several are compared.
    ff_sides = [(f"facefleet {l}" + (f" from {m} px" if len(min_faces) > 1 else ""), m, l)
                for m in min_faces for l in levels]

    def facefleet(min_face, level, path):
        ff = servers[min_face]
        ff.stdin.write(f"{level} {path}\n")
        ff.stdin.flush()
        ms, answer = ff.stdout.readline().split(" ", 1)
        return float(ms), answer.strip()

    # face_recognition: same gallery, enrolled from the same photos.
    known, names = [], []
    for p in photos:
        img = face_recognition.load_image_file(str(p))
        enc = face_recognition.face_encodings(img)
        if enc:
            known.append(enc[0])
            names.append(p.stem)

    def peer(path):
        t = time.perf_counter()
        img = face_recognition.load_image_file(str(path))
        locs = face_recognition.face_locations(img)
        encs = face_recognition.face_encodings(img, known_face_locations=locs)
        answer = "noface"
        if encs:
            d = face_recognition.face_distance(known, encs[0])
            i = int(d.argmin())
            answer = names[i] if d[i] <= 0.6 else "unknown"
        return (time.perf_counter() - t) * 1e3, answer

    # Warm-up once per side.
    for _, m, level in ff_sides:
        facefleet(m, level, photos[0])
    peer(photos[0])

    sides = [label for label, _, _ in ff_sides] + ["face_recognition"]
    times = {s: [] for s in sides}
    right = {s: 0 for s in sides}
    for _ in range(args.rounds):
        for p in photos:
            for label, m, level in ff_sides:
                ms, answer = facefleet(m, level, p)
                times[label].append(ms)
                right[label] += answer == p.stem
            ms, answer = peer(p)
            times["face_recognition"].append(ms)
            right["face_recognition"] += answer == p.stem
    for ff in servers.values():
        ff.stdin.close()
        ff.wait()

    n = len(photos) * args.rounds
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); one thread per side; {len(photos)} lfw-dev photos x {args.rounds} rounds")
    print(f"facefleet: {ready[len('ready '):]} (detected), smallest face {', '.join(min_faces)} px; face_recognition {face_recognition.__version__}, dlib {dlib.__version__}")
    peer_median = statistics.median(times["face_recognition"])
    print(f"{'side':<32} {'median ms':>10} {'min ms':>8} {'answers right':>14} {'x faster than face_recognition':>32}")
    for s in sides:
        med = statistics.median(times[s])
        print(f"{s:<32} {med:>10.2f} {min(times[s]):>8.2f} {right[s]:>8}/{n:<5} {peer_median / med:>32.2f}")


if __name__ == "__main__":
    main()
