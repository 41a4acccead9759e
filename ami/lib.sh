#!/usr/bin/env bash
# Shared code of the AMI bake scripts (sourced, not run).
#
# How a bake works, with no SSH and no credentials on the builder:
#   1. the binaries, units and env file are packed into a tarball and
#      uploaded to a staging bucket; a presigned URL (valid 1 hour) is made;
#   2. a builder instance starts from the stock Ubuntu LTS AMI (resolved
#      through the public SSM parameter) with user data that downloads the
#      tarball, installs it, enables the units and powers the instance off;
#   3. once stopped, the instance is imaged (create-image), the builder is
#      terminated and the staging object deleted; the AMI id is printed.
# With --dry-run every AWS CLI call is printed instead of run.

set -euo pipefail

DRY_RUN=0
REGION="${AWS_REGION:-us-east-1}"
PREFIX="${FACEFLEET_PREFIX:-facefleet}"
INSTANCE_TYPE="t3.small"
UBUNTU_RELEASE="24.04"
STAGING_BUCKET=""
AMI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$AMI_DIR/.." && pwd)"

# Prints the usage of the calling script and exits with $1.
usage() {
    cat <<USAGE
usage: $(basename "$0") [--dry-run] [--region R] [--prefix P] [--staging-bucket B]
                        [--instance-type T] [--ubuntu 24.04] [--bin-dir DIR]

Bakes the ${ROLE_NAME} AMI from the stock Ubuntu ${UBUNTU_RELEASE} LTS image.
  --dry-run          print the AWS CLI calls instead of running them
  --region R         AWS region (default: \$AWS_REGION or us-east-1)
  --prefix P         deployment prefix, used in names and tags (default: facefleet)
  --staging-bucket B bucket for the upload (default: <prefix>-ami-staging; made
                     and removed again by the script if it does not exist)
  --instance-type T  builder instance type (default: t3.small)
  --ubuntu V         Ubuntu LTS release (default: 24.04)
  --bin-dir DIR      where the release binaries are (default: target/release)
USAGE
    exit "$1"
}

BIN_DIR="$REPO_ROOT/target/release"

# Parses the common flags.
parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --dry-run) DRY_RUN=1 ;;
            --region) REGION="$2"; shift ;;
            --prefix) PREFIX="$2"; shift ;;
            --staging-bucket) STAGING_BUCKET="$2"; shift ;;
            --instance-type) INSTANCE_TYPE="$2"; shift ;;
            --ubuntu) UBUNTU_RELEASE="$2"; shift ;;
            --bin-dir) BIN_DIR="$2"; shift ;;
            -h|--help) usage 0 ;;
            *) echo "unknown argument: $1" >&2; usage 2 ;;
        esac
        shift
    done
    if [ -z "$STAGING_BUCKET" ]; then
        STAGING_BUCKET="$PREFIX-ami-staging"
    fi
}

# Prints an AWS CLI call, shell-quoted, on the script's standard output.
print_call() {
    printf 'aws --region %q' "$REGION" >&3
    printf ' %q' "$@" >&3
    printf '\n' >&3
}

# Runs an AWS CLI call whose output is not needed (it goes to stderr), or
# prints it in dry-run mode.
aws_call() {
    if [ "$DRY_RUN" -eq 1 ]; then
        print_call "$@"
    else
        aws --region "$REGION" "$@" >&2
    fi
}

# Runs an AWS CLI call and outputs its result; in dry-run mode prints the
# call and outputs the placeholder $1 instead.
aws_out() {
    local placeholder="$1"
    shift
    if [ "$DRY_RUN" -eq 1 ]; then
        print_call "$@"
        printf '%s\n' "$placeholder"
    else
        aws --region "$REGION" "$@"
    fi
}

# Packs the files to install into $1 (a tarball): binaries into
# usr/local/bin, units into etc/systemd/system, env files into etc/facefleet.
pack() {
    local out="$1" stage
    stage="$(mktemp -d)"
    install -d "$stage/usr/local/bin" "$stage/etc/systemd/system" "$stage/etc/facefleet"
    local bin
    for bin in "${BINARIES[@]}"; do
        if [ -x "$BIN_DIR/$bin" ]; then
            install -m 0755 "$BIN_DIR/$bin" "$stage/usr/local/bin/$bin"
        elif [ "$DRY_RUN" -eq 1 ]; then
            echo "# (dry run) $BIN_DIR/$bin is not built; build it with: cargo build --release -p $bin" >&2
        else
            echo "missing $BIN_DIR/$bin: build it first with: cargo build --release -p $bin" >&2
            rm -rf "$stage"
            exit 1
        fi
    done
    local unit
    for unit in "${UNITS[@]}"; do
        install -m 0644 "$AMI_DIR/units/$unit" "$stage/etc/systemd/system/$unit"
    done
    install -m 0644 "$AMI_DIR/env/$ENV_FILE" "$stage/etc/facefleet/$ENV_FILE"
    # Files only (no directory entries): extracting over / must not touch
    # the modes of existing directories.
    (cd "$stage" && find . -type f -print0 | tar --null -czf "$out" -T -)
    rm -rf "$stage"
}

# The builder's user data: fetch the tarball, install, enable, power off.
user_data() {
    local url="$1"
    cat <<USERDATA
#!/bin/bash
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get upgrade -y -q
apt-get install -y -q ca-certificates curl
useradd --system --no-create-home --shell /usr/sbin/nologin facefleet || true
curl -fsSL --retry 5 -o /tmp/facefleet.tar.gz '$url'
tar -C / --no-same-owner -xzf /tmp/facefleet.tar.gz
rm -f /tmp/facefleet.tar.gz
chmod 0755 /usr/local/bin/*
systemctl daemon-reload
systemctl enable ${UNITS[*]}
cloud-init clean --logs
poweroff
USERDATA
}

# Bakes the AMI and prints its id. The caller sets ROLE_NAME, BINARIES,
# UNITS and ENV_FILE. Standard output: the AWS CLI calls (dry run) and the
# AMI id; progress goes to standard error.
bake() {
    exec 3>&1
    local stamp tarball key url ami instance image_name
    stamp="$(date -u +%Y%m%d-%H%M%S)"
    image_name="$PREFIX-$ROLE_NAME-$stamp"
    tarball="$(mktemp -t facefleet-ami.XXXXXX.tar.gz)"
    key="ami-staging/$image_name.tar.gz"
    echo "# baking $image_name in $REGION (dry run: $DRY_RUN)" >&2

    pack "$tarball"
    local made_bucket=0
    if [ "$DRY_RUN" -eq 1 ]; then
        print_call s3 mb "s3://$STAGING_BUCKET"
        made_bucket=1
    elif ! aws --region "$REGION" s3api head-bucket --bucket "$STAGING_BUCKET" 2>/dev/null; then
        aws --region "$REGION" s3 mb "s3://$STAGING_BUCKET" >&2
        made_bucket=1
    fi
    ami="$(aws_out ami-0123456789abcdef0 ssm get-parameters \
        --names "/aws/service/canonical/ubuntu/server/$UBUNTU_RELEASE/stable/current/amd64/hvm/ebs-gp3/ami-id" \
        --query 'Parameters[0].Value' --output text)"
    aws_call s3 cp "$tarball" "s3://$STAGING_BUCKET/$key" --only-show-errors
    url="$(aws_out "https://$STAGING_BUCKET.s3.amazonaws.com/$key?presigned" s3 presign \
        "s3://$STAGING_BUCKET/$key" --expires-in 3600)"
    rm -f "$tarball"

    local ud
    ud="$(mktemp -t facefleet-userdata.XXXXXX)"
    user_data "$url" >"$ud"
    if [ "$DRY_RUN" -eq 1 ]; then
        echo "# user data of the builder:" >&2
        sed 's/^/#   /' "$ud" >&2
    fi
    instance="$(aws_out i-0123456789abcdef0 ec2 run-instances \
        --image-id "$ami" --instance-type "$INSTANCE_TYPE" --count 1 \
        --user-data "file://$ud" \
        --metadata-options HttpTokens=required \
        --tag-specifications "ResourceType=instance,Tags=[{Key=Name,Value=$image_name-builder},{Key=facefleet:prefix,Value=$PREFIX}]" \
        --query 'Instances[0].InstanceId' --output text)"
    rm -f "$ud"
    echo "# builder $instance installs the files and powers off (a few minutes)" >&2
    aws_call ec2 wait instance-stopped --instance-ids "$instance"
    image="$(aws_out ami-0fedcba9876543210 ec2 create-image --instance-id "$instance" \
        --name "$image_name" --description "facefleet $ROLE_NAME on Ubuntu $UBUNTU_RELEASE" \
        --tag-specifications "ResourceType=image,Tags=[{Key=facefleet:prefix,Value=$PREFIX},{Key=facefleet:role,Value=$ROLE_NAME}]" \
        --query ImageId --output text)"
    aws_call ec2 wait image-available --image-ids "$image"
    aws_call ec2 terminate-instances --instance-ids "$instance" --output text
    aws_call s3 rm "s3://$STAGING_BUCKET/$key" --only-show-errors
    if [ "$made_bucket" -eq 1 ]; then
        aws_call s3 rb "s3://$STAGING_BUCKET"
    fi
    echo "# done: $image" >&2
    printf '%s\n' "$image" >&3
}
