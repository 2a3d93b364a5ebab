#!/bin/sh
# Provisioning of the ubuntu2404-nginx-azure image (Ubuntu 24.04 LTS on Azure). Packer's shell
# provisioner runs it as root (execute_command: sudo -E sh) over SSH as the temporary build user.
#
#   1. wait for cloud-init         it still configures apt (and may hold its lock) at first boot
#   2. apt-get update, full-upgrade   every package up to date (the nightly patch-rebake)
#   3. install + enable nginx      and check it serves its page (the smoke test checks it again)
#   4. /etc/bakery-release         which image, which version, when
#   5. clean up packages           (the package set is final after this script)
#
# Then the template runs ../../shared/capture-packages.sh (the dpkg package list, downloaded by
# Packer) and scripts/deprovision.sh (generalise, waagent deprovision LAST).
#
# Inputs (environment): BAKERY_IMAGE_NAME, BAKERY_IMAGE_VERSION (the template passes them).
set -eu

: "${BAKERY_IMAGE_NAME:?BAKERY_IMAGE_NAME must be set (the template passes var.image_name)}"
: "${BAKERY_IMAGE_VERSION:?BAKERY_IMAGE_VERSION must be set (the template passes var.image_version)}"
export DEBIAN_FRONTEND=noninteractive
export APT_LISTCHANGES_FRONTEND=none
export NEEDRESTART_MODE=a

log() { echo "provision: $*"; }

# Wait for a concurrent apt/dpkg (unattended-upgrades at first boot) instead of failing on its
# lock; keep locally changed configuration files, take the package's for untouched ones.
apt_get() {
  apt-get -y -q \
    -o DPkg::Lock::Timeout=600 \
    -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold \
    "$@"
}

# shellcheck disable=SC1091 # the guest's os-release, not a file of this repository
log "image $BAKERY_IMAGE_NAME $BAKERY_IMAGE_VERSION on $(. /etc/os-release && echo "$PRETTY_NAME")"

if command -v cloud-init >/dev/null 2>&1; then
  log "waiting for cloud-init to finish"
  cloud-init status --wait >/dev/null || true
fi

log "apt-get update"
apt_get update

log "apt-get full-upgrade"
apt_get full-upgrade

log "installing nginx"
apt_get install nginx
systemctl enable nginx.service
systemctl restart nginx.service

log "checking nginx answers locally"
i=0
until curl -fsS --max-time 5 -o /dev/null http://127.0.0.1/; do
  i=$((i + 1))
  if [ "$i" -ge 30 ]; then
    echo "provision: nginx does not answer on 127.0.0.1:80" >&2
    systemctl --no-pager status nginx.service >&2 || true
    exit 1
  fi
  sleep 1
done

log "writing /etc/bakery-release"
cat >/etc/bakery-release <<EOF
IMAGE_FAMILY=$BAKERY_IMAGE_NAME
IMAGE_VERSION=$BAKERY_IMAGE_VERSION
BUILT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
chmod 0644 /etc/bakery-release

log "cleaning packages"
apt_get autoremove --purge
apt-get clean
rm -rf /var/lib/apt/lists/*
log "done: the package list is captured next, then deprovision.sh generalises"
