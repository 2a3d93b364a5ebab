#!/bin/sh
# Last step of a local (qemu) build (runs as root in the build VM, after the package list was
# captured): generalise the image: no machine identity, no SSH host keys, no logs, no build key.
set -eu

log() { echo "generalize: $*"; }

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
