#!/usr/bin/env bash
# kill -9 of `up` mid-load: how many workers are alive 5 s later, and the
# largest worker count after a restart on the same data folder under load.
# Needs a built facefleet (cargo build --release -p facefleet) and ../shared.
set -u
cd "$(dirname "$0")/../.." || exit 1
FF=${FF:-target/release/facefleet}
S=${FACEFLEET_SHARED_DIR:-../shared}/datasets/cse546
D=$(mktemp -d -t ffkill9.XXXXXX)
URL=http://127.0.0.1:8871
# Workers get their settings, the data folder among them, in their environment.
# The worker template (the process that forks them, named fleet-template) is
# counted apart: `workers` counts the workers, `workers template` the template.
workers() {
    local n=0 p comm
    for p in $(pgrep -f -- "worker|app-tier"); do
        { tr '\0' '\n' <"/proc/$p/environ" | grep -qx "FACEFLEET_DATA_DIR=$D/data"; } 2>/dev/null || continue
        comm=$(cat "/proc/$p/comm" 2>/dev/null)
        if [ "${1:-}" = template ]; then [ "$comm" = fleet-template ] || continue; else [ "$comm" = fleet-template ] && continue; fi
        n=$((n + 1))
    done
    echo "$n"
}
start_up() { "$FF" up --data-dir "$D/data" --listen 127.0.0.1:8871 --max-instances 15 >>"$D/up.out" 2>>"$D/up.log" & UP=$!; until curl -sf $URL/healthz >/dev/null; do sleep 0.2; done; }
load() { "$FF" loadgen --url $URL --dir "$S/face_images_1000" --labels "$S/labels_1000.csv" -c 100 --quiet >"$D/$1" 2>&1 & LG=$!; }
start_up
"$FF" enroll --url $URL --labels "$S/labels_100.csv" --dir "$S/face_images_100" >/dev/null
load load1.txt
sleep 3
echo "workers before kill -9 of up: $(workers) (and $(workers template) template)"
kill -9 "$UP"
sleep 5
echo "workers alive 5 s after kill -9 of up: $(workers) (and $(workers template) template)"
kill "$LG" 2>/dev/null; wait "$LG" 2>/dev/null
start_up
load load2.txt
most=0; most_status=0
while kill -0 "$LG" 2>/dev/null; do
    n=$(workers); [ "$n" -gt "$most" ] && most=$n
    s=$(curl -s $URL/v1/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["running_instances"])' 2>/dev/null || echo 0)
    [ "$s" -gt "$most_status" ] && most_status=$s
    sleep 0.1
done
echo "after a restart under load: at most $most worker processes (and $(workers template) template), running_instances at most $most_status (max 15)"
tail -4 "$D/load2.txt"
sleep 70
curl -s $URL/v1/status | python3 -c 'import json,sys; d=json.load(sys.stdin); print("70 s after the load:", d["response_queue_depth"], "responses left,", d["running_instances"], "instances")'
kill "$UP"; wait "$UP"
rm -rf "$D"
