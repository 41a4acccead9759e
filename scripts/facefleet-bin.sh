#!/usr/bin/env bash
# Sourced by scripts/provision and scripts/teardown: runs the `facefleet`
# binary ($FACEFLEET_BIN, else a built one in target/ that has the AWS
# backend, else through cargo with the `aws` feature).
run_facefleet() {
    if [ -n "${FACEFLEET_BIN:-}" ]; then
        exec "$FACEFLEET_BIN" "$@"
    fi
    local candidate
    for candidate in target/release/facefleet target/debug/facefleet; do
        # Builds without `--features aws` have no provision/teardown.
        if [ -x "$candidate" ] && "$candidate" help provision >/dev/null 2>&1; then
            exec "$candidate" "$@"
        fi
    done
    exec cargo run --quiet --release -p facefleet --features aws -- "$@"
}
