#!/usr/bin/env bash
# Sourced by scripts/provision and scripts/teardown: runs the `facefleet`
# binary ($FACEFLEET_BIN, else a built one in target/, else through cargo).
run_facefleet() {
    if [ -n "${FACEFLEET_BIN:-}" ]; then
        exec "$FACEFLEET_BIN" "$@"
    fi
    local candidate
    for candidate in target/release/facefleet target/debug/facefleet; do
        if [ -x "$candidate" ]; then
            exec "$candidate" "$@"
        fi
    done
    exec cargo run --quiet --release -p facefleet -- "$@"
}
