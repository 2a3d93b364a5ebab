#!/usr/bin/env bash
# Build local stand-ins for the compose stack's three base images, for machines that reach no
# container registry (the test machines: tests/compose/test_stack.py). Users pull the real ones
# (apache/airflow, postgres, redis): see README, "The production stack".
#
#   scripts/build-standins.sh PREFIX
#
# One Debian 12 root filesystem is made with mmdebstrap (the Debian packages of all three: Python
# 3.11, postgresql, redis-server, and the bake tools docker/Dockerfile installs, so that its
# apt-get install finds them present), `podman import`ed once, and the three images are
# `podman build` layers on it (docker/standins/Containerfile.*):
#   localhost/PREFIX-rootfs:bookworm        the imported root filesystem
#   localhost/PREFIX-airflow-base:3.3.2     stand-in for apache/airflow:3.3.2-python3.11
#   localhost/PREFIX-postgres:standin       stand-in for postgres:16
#   localhost/PREFIX-redis:standin          stand-in for redis:7.2-bookworm
# The last lines on stdout are KEY=value for docker-compose.yaml's substitution variables
# (AIRFLOW_BASE_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE). The Python distributions are kept in a wheelhouse,
# ~/.cache/image-bakery/wheels (BAKERY_WHEELHOUSE; owned by uid 50000, the image's airflow user), so a
# rebuild on this machine, by any clone, installs them without the network.
# Needs root, mmdebstrap, podman; CONTAINERS_CONF defaults to docker/containers.conf.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$REPO_ROOT/docker/containers.conf}"
# no intermediate images: each build leaves exactly the one tagged image (nothing nameless behind)
export BUILDAH_LAYERS="${BUILDAH_LAYERS:-false}"
prefix="${1:?usage: build-standins.sh PREFIX}"
case "$prefix" in *[!a-z0-9-]* | -*) echo "build-standins: PREFIX must be lower-case letters, digits and dashes" >&2; exit 2 ;; esac
MIRROR="${BAKERY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${BAKERY_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
log() { printf '[build-standins %4ds] %s\n' "$SECONDS" "$*" >&2; }

PACKAGES=(
  ca-certificates curl procps dumb-init
  python3 python3-venv
  postgresql redis-server redis-tools
  packer qemu-system-x86 qemu-utils mmdebstrap fdisk e2fsprogs openssh-client
)
rootfs="localhost/$prefix-rootfs:bookworm"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT

log "mmdebstrap bookworm (${#PACKAGES[@]} packages) | podman import $rootfs"
pkgs="$(IFS=,; echo "${PACKAGES[*]}")"
mmdebstrap --mode=root --variant=minbase --format=tar --include="$pkgs" \
  --aptopt='Acquire::Retries "5"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  bookworm - \
  "deb $MIRROR bookworm main" \
  "deb $MIRROR bookworm-updates main" \
  "deb $SECURITY_MIRROR bookworm-security main" \
  2> >(grep -v '^I: ' >&2) |
  podman import --change 'CMD ["/bin/bash"]' - "$rootfs" >/dev/null

cp "$REPO_ROOT/docker/standins/"* "$REPO_ROOT/requirements.txt" "$REPO_ROOT/constraints.txt" "$ctx/"
# the wheelhouse outside the clone, so that every clone on this machine (CI's fresh ones too) reuses it
cache="${BAKERY_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/image-bakery/wheels}"
mkdir -p "$cache"
chown -R 50000:0 "$cache"
for what in redis postgres airflow; do
  case "$what" in
    airflow) tag="localhost/$prefix-airflow-base:3.3.2" ;;
    *) tag="localhost/$prefix-$what:standin" ;;
  esac
  log "podman build $tag"
  podman build --quiet --build-arg ROOTFS="$rootfs" -f "$ctx/Containerfile.$what" -t "$tag" \
    --volume "$cache:/wheelhouse" \
    --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    "$ctx" >/dev/null
done
log "done"
echo "AIRFLOW_BASE_IMAGE=localhost/$prefix-airflow-base:3.3.2"
echo "POSTGRES_IMAGE=localhost/$prefix-postgres:standin"
echo "REDIS_IMAGE=localhost/$prefix-redis:standin"
