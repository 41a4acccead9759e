#!/usr/bin/env bash
# Hostile-client numbers of README.md: same-name concurrency with the real
# model, peak RSS of `up` under 32 decompression bombs, a normal request
# while 1000 idle connections are held. Needs a built facefleet
# (cargo build --release -p facefleet) and ../shared.
set -u
cd "$(dirname "$0")/../.." || exit 1
FF=${FF:-target/release/facefleet}
D=$(mktemp -d -t ffprobe.XXXXXX)
"$FF" up --data-dir "$D/data" --listen 127.0.0.1:8873 >"$D/up.out" 2>"$D/up.log" &
UP=$!
until curl -sf 127.0.0.1:8873/healthz >/dev/null; do sleep 0.2; done
python3 scripts/probes/hostile.py http://127.0.0.1:8873 "$UP" samename bombs idle
kill "$UP"; wait "$UP"
rm -rf "$D"
