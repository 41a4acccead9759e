#!/usr/bin/env bash
# Bakes the app-tier AMI: Ubuntu LTS + the release `app-tier` binary (model
# weights embedded) + facefleet-app-tier.service + /etc/facefleet/app-tier.env.
# Prints the AMI id; pass it to `facefleet provision --ami`.
#   cargo build --release -p app-tier && ami/bake-app-tier.sh --prefix P
#   ami/bake-app-tier.sh --dry-run      # print the AWS CLI calls only
set -euo pipefail
# shellcheck source=ami/lib.sh
. "$(dirname "$0")/lib.sh"

# Read by lib.sh.
export ROLE_NAME="app-tier"
BINARIES=(app-tier)
UNITS=(facefleet-app-tier.service)
ENV_FILE="app-tier.env"

parse_args "$@"
bake
