#!/bin/sh
# Provisioning of the debian12-nginx image (runs as root inside the build VM, via Packer's shell
# provisioner). The nightly patch-rebake: bring every package up to date, install nginx, then
# generalise the image (no machine identity, no SSH host keys, no apt lists, no build key).
#
# Inputs (environment): BAKERY_IMAGE_VERSION (required).
set -eu

: "${BAKERY_IMAGE_VERSION:?BAKERY_IMAGE_VERSION must be set (the template passes var.image_version)}"
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

log "apt-get update"
apt_get update

log "apt-get full-upgrade"
apt_get full-upgrade

log "installing nginx"
apt_get install --no-install-recommends nginx
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
apt-get clean
rm -rf /var/lib/apt/lists/*

log "SSH host keys: removing; they are regenerated before sshd on the next boot"
# The bakery base image ships this unit (it generates the ed25519 and ecdsa keys sshd is set up
# for). On another base, install a generic one so that the image never boots without host keys.
if [ ! -f /etc/systemd/system/bakery-ssh-hostkeys.service ]; then
  cat >/etc/systemd/system/bakery-ssh-hostkeys.service <<'EOF'
[Unit]
Description=Generate missing SSH host keys (image bakery)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
EOF
fi
systemctl enable bakery-ssh-hostkeys.service
rm -f /etc/ssh/ssh_host_*

log "machine identity: machine-id, random seed, logs"
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id /var/lib/systemd/random-seed
journalctl --rotate >/dev/null 2>&1 || true
journalctl --vacuum-time=1s >/dev/null 2>&1 || true
find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
find /var/log -type f ! -path '/var/log/journal/*' -exec truncate -s 0 {} +
rm -rf /var/tmp/*
rm -f /root/.bash_history

# Last: the build's ephemeral key. Packer's open SSH connection keeps working for the shutdown.
log "removing /root/.ssh/authorized_keys"
rm -f /root/.ssh/authorized_keys
sync
log "done"
