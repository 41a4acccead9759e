#!/usr/bin/env python3
"""Hostile-client probes against a running `facefleet up` on loopback, for the numbers in
README.md and docs/SECURITY.md (scripts/probes/web.sh runs them).

usage: hostile.py URL UP_PID PROBE...   PROBE in: samename bombs idle
  samename  32 lfw-dev people enrolled, then a photo of each sent at once, all named same.jpg
            (then without a file name): answers that name someone else
  bombs     32 concurrent 6000x6000 PNGs of zeros: peak RSS of the `up` process
  idle      1000 connections that send headers and no body, then a normal POST /
Reads ../shared (or $FACEFLEET_SHARED_DIR); FACEFLEET_API_KEY is sent when set.
"""
import http.client, io, json, os, socket, struct, sys, threading, time, uuid, zlib, glob, random

SHARED = os.environ.get("FACEFLEET_SHARED_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../shared"))
url = sys.argv[1]; up_pid = int(sys.argv[2]); whats = sys.argv[3:]
host, port = url.replace("http://", "").split(":"); port = int(port)
KEY = os.environ.get("FACEFLEET_API_KEY")

def multipart(field, filename, data, ctype="application/octet-stream"):
    b = uuid.uuid4().hex
    head = f'--{b}\r\nContent-Disposition: form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "") + f'\r\nContent-Type: {ctype}\r\n\r\n'
    body = head.encode() + data + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"

def post(path, field, filename, data):
    body, ct = multipart(field, filename, data)
    c = http.client.HTTPConnection(host, port, timeout=300)
    h = {"Content-Type": ct}
    if KEY: h["x-api-key"] = KEY
    t = time.time(); c.request("POST", path, body, h); r = c.getresponse(); out = r.read().decode(errors="replace")
    return r.status, out, time.time() - t

def hwm(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM") or line.startswith("VmRSS"):
            yield line.split()[0], int(line.split()[1]) // 1024

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1]) // 1024

def png_zeros(w, h):
    raw = zlib.compress(b"".join(b"\x00" + bytes(w) for _ in range(h)), 9)
    def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")

if "samename" in whats:
    # 32 lfw-dev people: enroll photo 1 of each, then send photo 2 of each, all named same.jpg, at once.
    people = sorted(glob.glob(os.path.join(SHARED, "datasets/lfw-dev/*/")))
    people = [p for p in people if len(glob.glob(p + "*.jpg")) >= 2][:32]
    for p in people:
        name = os.path.basename(p.rstrip("/")); photo = sorted(glob.glob(p + "*.jpg"))[0]
        st, out, _ = post(f"/v1/people/{name}/faces", "image", "e.jpg", open(photo, "rb").read())
        assert st == 201, (st, out)
    for fname in ["same.jpg", None]:
        res = [None] * len(people)
        def one(i, p):
            photo = sorted(glob.glob(p + "*.jpg"))[1]
            res[i] = post("/", "inputFile", fname, open(photo, "rb").read())
        ts = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(people)]
        [t.start() for t in ts]; [t.join() for t in ts]
        stem = "same" if fname else "upload"
        names = {os.path.basename(p.rstrip('/')) for p in people}
        mine = [os.path.basename(p.rstrip('/')) for p in people]
        got = [r[1].split(":", 1)[-1] for r in res]
        crossed = [(m, g) for m, g in zip(mine, got) if g != m and g in names]
        missed = [(m, g) for m, g in zip(mine, got) if g != m and g not in names]
        print(f"same-name burst, file name {fname!r}: {len(people)} requests, statuses {sorted(set(r[0] for r in res))}; "
              f"{len(crossed)} answers named another client's person {crossed[:5]}; {len(missed)} not recognised {missed[:5]}")

if "bombs" in whats:
    data = png_zeros(6000, 6000)
    print(f"6000x6000 PNG of zeros: {len(data)} bytes; up RSS before: {rss(up_pid)} MB")
    peak = [0]; stop = [False]
    def sample():
        while not stop[0]:
            peak[0] = max(peak[0], rss(up_pid)); time.sleep(0.02)
    s = threading.Thread(target=sample); s.start()
    res = [None] * 32
    def one(i): res[i] = post("/", "inputFile", f"bomb{i}.png", data)
    ts = [threading.Thread(target=one, args=(i,)) for i in range(32)]
    t0 = time.time(); [t.start() for t in ts]; [t.join() for t in ts]
    stop[0] = True; s.join()
    print(f"32 concurrent uploads: statuses {sorted(set(r[0] for r in res))}, answers e.g. {res[0][1].strip()!r}, {time.time()-t0:.1f} s; up peak RSS sampled {peak[0]} MB; {dict(hwm(up_pid))}")

if "idle" in whats:
    socks = []
    for i in range(1000):
        s = socket.create_connection((host, port))
        s.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=b\r\ncontent-length: 100000\r\n\r\n")
        socks.append(s)
    time.sleep(0.5)
    photo = os.path.join(SHARED, "datasets/cse546/face_images_1000/test_000.jpg")
    for k in range(5):
        st, out, dt = post("/", "inputFile", "test_000.jpg", open(photo, "rb").read())
        print(f"with 1000 idle connections held: POST / -> {st} {out.strip()!r} in {dt*1000:.0f} ms")
    for s in socks: s.close()
