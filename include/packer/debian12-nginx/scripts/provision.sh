#!/bin/sh
# Provisioning of the debian12-nginx image (runs as root inside the build VM, via Packer's shell
# provisioner). The nightly patch-rebake: bring every package up to date and install the image's
# packages (nginx), from the package sources the bakery chose for this run; then the image's own
# apt sources are put back. ../shared/capture-packages.sh lists the result and generalize.sh
# removes the machine's identity and the build key.
#
# Inputs (environment):
#   BAKERY_IMAGE_VERSION      required
#   BAKERY_PACKAGES           packages to install (space separated; default nginx)
#   BAKERY_APT_SOURCES_B64    base64 of the sources.list to build with (the bakery's package server:
#                             the live mirrors through it, a dated snapshot, or a version's own pool);
#                             empty: the image's own sources
#   BAKERY_APT_CONF_B64       base64 of apt options for the build (e.g. no Valid-Until for snapshots)
set -eu

: "${BAKERY_IMAGE_VERSION:?BAKERY_IMAGE_VERSION must be set (the template passes var.image_version)}"
BAKERY_PACKAGES="${BAKERY_PACKAGES:-nginx}"
export DEBIAN_FRONTEND=noninteractive
export APT_LISTCHANGES_FRONTEND=none

log() { echo "provision: $*"; }

# Wait for a concurrent apt/dpkg (apt-daily at boot) instead of failing on its lock.
apt_get() {
  apt-get -y -q \
    -o DPkg::Lock::Timeout=600 \
    -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold \
    "$@"
}

log "image version $BAKERY_IMAGE_VERSION; base $(tr '\n' ' ' </etc/bakery-base 2>/dev/null || true)"

ORIG=/var/tmp/bakery-apt-orig
if [ -n "${BAKERY_APT_SOURCES_B64:-}" ]; then
  log "package sources of this build:"
  rm -rf "$ORIG" && mkdir -p "$ORIG"
  [ -f /etc/apt/sources.list ] && mv /etc/apt/sources.list "$ORIG/"
  [ -d /etc/apt/sources.list.d ] && mv /etc/apt/sources.list.d "$ORIG/"
  mkdir -p /etc/apt/sources.list.d
  echo "$BAKERY_APT_SOURCES_B64" | base64 -d >/etc/apt/sources.list
  echo "${BAKERY_APT_CONF_B64:-}" | base64 -d >/etc/apt/apt.conf.d/99bakery-build
  sed 's/^/  /' /etc/apt/sources.list
fi

log "apt-get update"
apt_get update

log "apt-get full-upgrade"
apt_get full-upgrade

log "installing $BAKERY_PACKAGES"
# shellcheck disable=SC2086 # a list of package names
apt_get install --no-install-recommends $BAKERY_PACKAGES
systemctl enable nginx.service
systemctl restart nginx.service

log "checking nginx answers locally"
i=0
until curl -fsS --max-time 5 http://127.0.0.1/ | grep -q "Welcome to nginx"; do
  i=$((i + 1))
  if [ "$i" -ge 30 ]; then
    echo "provision: nginx does not serve its welcome page on 127.0.0.1:80" >&2
    systemctl --no-pager status nginx.service >&2 || true
    exit 1
  fi
  sleep 1
done

log "writing /etc/bakery-release"
cat >/etc/bakery-release <<EOF
IMAGE_FAMILY=debian12-nginx
IMAGE_VERSION=$BAKERY_IMAGE_VERSION
BUILT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
chmod 0644 /etc/bakery-release

log "cleaning packages"
apt_get autoremove --purge
if [ -d "$ORIG" ]; then
  log "putting the image's own package sources back"
  rm -rf /etc/apt/sources.list /etc/apt/sources.list.d /etc/apt/apt.conf.d/99bakery-build
  [ -f "$ORIG/sources.list" ] && mv "$ORIG/sources.list" /etc/apt/
  if [ -d "$ORIG/sources.list.d" ]; then mv "$ORIG/sources.list.d" /etc/apt/; else mkdir -p /etc/apt/sources.list.d; fi
  rm -rf "$ORIG"
fi
apt-get clean
rm -rf /var/lib/apt/lists/*
log "done"

