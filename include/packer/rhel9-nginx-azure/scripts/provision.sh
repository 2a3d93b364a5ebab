#!/bin/sh
# Provisioning of the rhel9-nginx-azure image (AlmaLinux 9 on Azure). Packer's shell provisioner
# runs it as root (execute_command: sudo -E sh) over SSH as the temporary build user.
#
#   1. dnf -y update               every package up to date (the nightly patch-rebake)
#   2. install + enable nginx      and check it serves its page (the smoke test checks it again)
#   3. /etc/bakery-release         which image, which version, when
#   4. clean up, generalise
#   5. waagent deprovision         LAST: it deletes the build user, nothing can run after it
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

# cloud-init provisions the VMs made from this image: forget this boot so that it runs again.
if command -v cloud-init >/dev/null 2>&1; then
  log "cloud-init clean"
  cloud-init clean --logs
fi

# The template sets skip_clean (Packer cannot log in to remove this script once the build user is
# gone), so the script removes itself; the shell keeps reading it from the open file.
rm -f -- "$0"

log "deprovisioning (waagent): removes the build user, SSH host keys, DHCP leases; generalises"
/usr/sbin/waagent -force -deprovision+user && export HISTSIZE=0 && sync
