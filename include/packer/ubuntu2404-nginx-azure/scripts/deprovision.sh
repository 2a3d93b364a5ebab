#!/bin/sh
# Last step of the ubuntu2404-nginx-azure build (Ubuntu 24.04 LTS on Azure), after provision.sh and after Packer
# downloaded the package list (../../shared/capture-packages.sh): generalise the VM. Packer's
# shell provisioner runs it as root (execute_command: sudo -E sh) over SSH as the build user.
#
#   1. remove the package list     it was for the bake, not for the image
#   2. cloud-init clean            the VMs made from the image run cloud-init again
#   3. waagent deprovision         LAST: it deletes the build user, nothing can run after it
set -eu

log() { echo "deprovision: $*"; }

log "removing the captured package list"
rm -f /tmp/bakery-packages.tsv /tmp/bakery-packages.tsv.tmp

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
