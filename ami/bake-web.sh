#!/usr/bin/env bash
# Bakes the web-instance AMI: Ubuntu LTS + the release `web-tier` and
# `autoscaler` binaries + their systemd units + /etc/facefleet/web.env.
# Prints the AMI id; launch `web-instance` from it (see docs/DEPLOY_AWS.md).
#   cargo build --release -p web-tier -p autoscaler && ami/bake-web.sh --prefix P
#   ami/bake-web.sh --dry-run           # print the AWS CLI calls only
set -euo pipefail
# shellcheck source=ami/lib.sh
. "$(dirname "$0")/lib.sh"

# Read by lib.sh.
export ROLE_NAME="web"
BINARIES=(web-tier autoscaler)
UNITS=(facefleet-web-tier.service facefleet-autoscaler.service)
ENV_FILE="web.env"

parse_args "$@"
bake
