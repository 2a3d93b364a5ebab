#!/bin/sh
# Provisioning of the rhel9-nginx-azure image (AlmaLinux 9 on Azure). Packer's shell provisioner
# runs it as root (execute_command: sudo -E sh) over SSH as the temporary build user.
#
#   1. dnf -y update               every package up to date (the nightly patch-rebake)
#   2. install + enable nginx      and check it serves its page (the smoke test checks it again)
#   3. /etc/bakery-release         which image, which version, when
#   4. clean up packages           (the package set is final after this script)
#
# Then the template runs ../../shared/capture-packages.sh (the rpm package list, downloaded by
# Packer) and scripts/deprovision.sh (generalise, waagent deprovision LAST).
#
# Inputs (environment): BAKERY_IMAGE_NAME, BAKERY_IMAGE_VERSION (the template passes them).
set -eu

: "${BAKERY_IMAGE_NAME:?BAKERY_IMAGE_NAME must be set (the template passes var.image_name)}"
: "${BAKERY_IMAGE_VERSION:?BAKERY_IMAGE_VERSION must be set (the template passes var.image_version)}"

log() { echo "provision: $*"; }

# shellcheck disable=SC1091 # the guest's os-release, not a file of this repository
log "image $BAKERY_IMAGE_NAME $BAKERY_IMAGE_VERSION on $(. /etc/os-release && echo "$PRETTY_NAME")"

log "dnf -y update"
dnf -y update

log "installing nginx"
dnf -y install nginx
systemctl enable nginx.service
systemctl restart nginx.service

# The Marketplace image ships without an active firewalld; if one is enabled, let HTTP in.
if systemctl is-enabled --quiet firewalld.service 2>/dev/null; then
  log "firewalld is enabled: allowing http"
  firewall-offline-cmd --add-service=http
fi

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
dnf -y autoremove
dnf clean all
log "done: the package list is captured next, then deprovision.sh generalises"
