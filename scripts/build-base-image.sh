#!/usr/bin/env bash
# Build the Debian 12 (bookworm) base disk image that the local target's Packer
# templates start from (include/packer/*: source "qemu", disk_image = true).
#
#   scripts/build-base-image.sh            # build if needed, print the image path (last line)
#   BAKERY_HOME=/srv/bakery scripts/build-base-image.sh
#
# What it does, without loop devices and without mounting any image (mmdebstrap itself mounts
# /proc, /sys and /dev inside the chroot while it installs, and unmounts them):
#   1. mmdebstrap a bookworm rootfs from Debian's mirror into a directory (deb.debian.org: debian
#      for bookworm + bookworm-updates, debian-security for bookworm-security, so that a derived
#      image's `apt-get full-upgrade` gets security fixes);
#   2. configure it (fstab, DHCP on the first NIC via systemd-networkd, sshd key-only, root locked,
#      no SSH host keys baked in, a fw_cfg unit that installs an ephemeral authorized_keys); for the
#      boot time under TCG (issue 11, benchmarks/boot.py): Debian's cloud kernel, an initramfs with only
#      the virtio disk's modules (MODULES=list: virtio_pci, virtio_blk; ext4 is built into that kernel),
#      so that GRUB reads and the kernel unpacks a few MB instead of the generic initramfs's ~30 MB,
#      and e2scrub_reap masked. The image boots on QEMU/KVM with a virtio disk (what the local target
#      and Packer's qemu builder give it), not on a SATA or SCSI disk;
#   3. `mke2fs -d` the directory into an ext4 partition image; `sfdisk` an MBR disk; `dd` the
#      partition in at its offset;
#   4. make the disk self-booting: one QEMU boot with direct kernel boot (-kernel/-initrd taken from
#      the rootfs, root=/dev/vda1, init=<one-shot script>) runs grub-install /dev/vda + update-grub
#      and powers off;
#   5. `qemu-img convert -c` to qcow2, write the .sha256 next to it, flip the stable symlink.
#
# Outputs (BAKERY_HOME defaults to <repo>/var):
#   $BAKERY_HOME/base/debian12-<recipehash>.qcow2          the image (immutable once written)
#   $BAKERY_HOME/base/debian12-<recipehash>.qcow2.sha256   "<sha256>  <file name>" (sha256sum -c)
#   $BAKERY_HOME/base/debian12.qcow2 (+ .sha256)           stable symlinks to the current recipe
#   $BAKERY_HOME/base/logs/debian12-<recipehash>.log       full build log
# stdout carries only the stable path (as its last and only line); progress goes to stderr.
#
# Caching: the recipe hash is sha256 over this script (the whole recipe lives in it). If the image
# for the current hash exists, nothing is built. Change the script => new hash => rebuild.
#
# SSH access model (no secrets in the image): root has no password (locked) and sshd refuses
# passwords. At every boot, bakery-fwcfg-ssh-keys.service (before ssh.service) copies the QEMU
# fw_cfg blob opt/bakery/authorized_keys (if present) to /root/.ssh/authorized_keys. Packer passes a
# per-build ephemeral public key with: -fw_cfg name=opt/bakery/authorized_keys,file=<key.pub>.
# SSH host keys are not baked in: bakery-ssh-hostkeys.service makes the ed25519 and ecdsa keys
# (the ones sshd is configured for) before sshd, on any boot that finds them missing.
#
# Interrupting it (SIGINT/SIGTERM/SIGHUP) stops the running step and the one-shot QEMU, removes the
# build directory and leaves the cache as it was. Base images of older recipes are pruned
# (BAKERY_BASE_KEEP).
#
# Environment:
#   BAKERY_HOME                 state directory (default <repo>/var)
#   BAKERY_ACCEL                kvm|tcg: force the accelerator of the one-shot boot (default: detect)
#   BAKERY_DEBIAN_MIRROR        default http://deb.debian.org/debian
#   BAKERY_DEBIAN_SECURITY_MIRROR  default http://deb.debian.org/debian-security
#   BAKERY_BASE_DISK_SIZE_MIB   virtual disk size in MiB (default 4096)
#   BAKERY_BASE_KEEP            how many base images (recipes) to keep, newest first (default 2)
#   BAKERY_BASE_BOOT_TIMEOUT    seconds for the one-shot grub boot (default 900)
# Mirrors and sizes are not part of the recipe hash; change the script to force a rebuild.
set -euo pipefail
umask 022

SCRIPT_PATH="$(readlink -f "${BASH_SOURCE[0]}")"
REPO_ROOT="$(cd "$(dirname "$SCRIPT_PATH")/.." && pwd)"
BAKERY_HOME="${BAKERY_HOME:-$REPO_ROOT/var}"
BASE_DIR="$BAKERY_HOME/base"
LOG_DIR="$BASE_DIR/logs"
NAME="debian12"
SUITE="bookworm"
MIRROR="${BAKERY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${BAKERY_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
DISK_SIZE_MIB="${BAKERY_BASE_DISK_SIZE_MIB:-4096}"
KEEP="${BAKERY_BASE_KEEP:-2}"
BOOT_TIMEOUT="${BAKERY_BASE_BOOT_TIMEOUT:-900}"
PART_START_MIB=1

# Packages on top of the minbase variant (Essential + Priority: required + apt).
# The kernel is Debian's cloud flavour: built for virtual machines (virtio, QEMU's fw_cfg; ext4 built
# in), a quarter of the generic kernel's modules, so that udev has less to probe at every boot.
PACKAGES=(
  linux-image-cloud-amd64 initramfs-tools zstd grub-pc
  systemd-sysv udev dbus libpam-systemd systemd-resolved
  openssh-server ca-certificates curl sudo
  e2fsprogs kmod iproute2 netbase procps
)

START_TS=$SECONDS
log() { printf '[build-base-image %4ds] %s\n' "$((SECONDS - START_TS))" "$*" >&2; }
die() {
  printf 'build-base-image: ERROR: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------- preflight
missing=()
for tool in mmdebstrap mke2fs sfdisk qemu-img qemu-system-x86_64 sha256sum flock timeout dd chroot; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  die "missing tools: ${missing[*]}. On Debian/Ubuntu: apt-get install mmdebstrap e2fsprogs fdisk qemu-utils qemu-system-x86 coreutils util-linux"
fi
case "$DISK_SIZE_MIB" in '' | *[!0-9]*) die "BAKERY_BASE_DISK_SIZE_MIB must be a whole number of MiB, got '$DISK_SIZE_MIB'" ;; esac
[ "$DISK_SIZE_MIB" -ge 2048 ] || die "BAKERY_BASE_DISK_SIZE_MIB must be at least 2048, got $DISK_SIZE_MIB"
case "$KEEP" in '' | *[!0-9]* | 0) die "BAKERY_BASE_KEEP must be a positive whole number, got '$KEEP'" ;; esac

detect_accel() {
  case "${BAKERY_ACCEL:-}" in
    kvm | tcg)
      echo "$BAKERY_ACCEL"
      return
      ;;
    "") ;;
    *) die "BAKERY_ACCEL must be 'kvm' or 'tcg' (or unset to detect), got '$BAKERY_ACCEL'" ;;
  esac
  # Same rule as plugins/bakery/accel.py: KVM only if /dev/kvm is usable AND the CPU advertises
  # vmx/svm or kvm_intel/kvm_amd is loaded (a PVM /dev/kvm cannot boot a stock kernel).
  if [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] &&
    { grep -qE '^flags[[:space:]]*:.*[[:space:]](vmx|svm)([[:space:]]|$)' /proc/cpuinfo 2>/dev/null ||
      grep -qE '^(kvm_intel|kvm_amd) ' /proc/modules 2>/dev/null; }; then
    echo kvm
  else
    echo tcg
  fi
}

ACCEL="$(detect_accel)" # validates BAKERY_ACCEL before anything else happens

RECIPE_HASH="$(sha256sum "$SCRIPT_PATH" | cut -c1-16)"
IMAGE="$BASE_DIR/$NAME-$RECIPE_HASH.qcow2"
STABLE="$BASE_DIR/$NAME.qcow2"
BUILD_LOG="$LOG_DIR/$NAME-$RECIPE_HASH.log"

mkdir -p "$BASE_DIR" "$LOG_DIR" || die "cannot create $BASE_DIR (BAKERY_HOME=$BAKERY_HOME)"

# Atomically point $2 at $1 (relative symlink in the same directory).
flip_symlink() {
  local target="$1" link="$2" tmp
  tmp="$link.tmp.$$"
  ln -sfn "$(basename "$target")" "$tmp"
  mv -Tf "$tmp" "$link"
}

publish_stable() {
  flip_symlink "$IMAGE" "$STABLE"
  flip_symlink "$IMAGE.sha256" "$STABLE.sha256"
}

is_cached() { [ -f "$IMAGE" ] && [ -f "$IMAGE.sha256" ]; }

# ---------------------------------------------------------------- cache hit (fast path)
if is_cached; then
  exec 9>"$BASE_DIR/.$NAME.lock"
  flock 9
  publish_stable
  log "cached: $IMAGE (recipe $RECIPE_HASH)"
  echo "$STABLE"
  exit 0
fi

# Building needs root; a cache hit does not (the compose stack's Celery worker runs as the airflow
# user and reads the base image the host or airflow-init put into the bakery volume).
[ "$(id -u)" -eq 0 ] || die "must run as root to build the base image (mmdebstrap root mode and mke2fs -d need to preserve file ownership), and $IMAGE is not cached yet. Re-run with sudo."

# ---------------------------------------------------------------- lock, then re-check
exec 9>"$BASE_DIR/.$NAME.lock"
if ! flock -n 9; then
  log "another build of the base image is running; waiting for its lock ($BASE_DIR/.$NAME.lock)"
  flock 9
fi
if is_cached; then
  publish_stable
  log "cached (built by a concurrent run): $IMAGE"
  echo "$STABLE"
  exit 0
fi

WORK="$(mktemp -d "$BASE_DIR/.build-$RECIPE_HASH.XXXXXX")"
ROOTFS="$WORK/rootfs"
QEMU_PID=""
STEP_PID=""

# Stop a child: SIGTERM, up to $2 seconds, then SIGKILL (its own children too).
stop_child() {
  local pid="$1" grace="$2"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((grace * 2))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$STEP_PID" ] && kill -0 "$STEP_PID" 2>/dev/null; then
    log "stopping the running step (pid $STEP_PID)"
    stop_child "$STEP_PID" 30 # mmdebstrap unmounts what it mounted on SIGTERM
  fi
  if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
    log "stopping the one-shot QEMU (pid $QEMU_PID)"
    stop_child "$QEMU_PID" 10 # `timeout` passes SIGTERM on to QEMU
  fi
  if [ -d "$WORK" ]; then
    # Never descend into something still mounted inside the build tree (an interrupted
    # mmdebstrap could leave /proc, /sys or /dev mounts behind).
    local m
    while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done < <(awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r)
    rm -rf --one-file-system "$WORK" || log "warning: could not remove $WORK"
  fi
  if [ "$rc" -ne 0 ]; then
    printf 'build-base-image: FAILED (exit %s). Full log: %s\n' "$rc" "$BUILD_LOG" >&2
    if [ -s "$BUILD_LOG" ]; then
      printf -- '--- last 40 lines of the log ---\n' >&2
      tail -n 40 "$BUILD_LOG" >&2 || true
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

: >"$BUILD_LOG"
log "building $IMAGE (recipe $RECIPE_HASH, accelerator $ACCEL); log: $BUILD_LOG"

# Run a step with its output in the build log. In the background + `wait`, so that a signal to
# this script is handled at once (bash defers traps until a foreground command ends); cleanup()
# then stops the step.
run() {
  printf '+ %s\n' "$*" >>"$BUILD_LOG"
  local rc=0
  "$@" <&0 >>"$BUILD_LOG" 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID" || rc=$?
  STEP_PID=""
  return "$rc"
}

# ---------------------------------------------------------------- 1. rootfs
ROOT_UUID="$(cat /proc/sys/kernel/random/uuid)"
FSTAB_LINE="UUID=$ROOT_UUID  /  ext4  errors=remount-ro  0  1"
log "mmdebstrap $SUITE from $MIRROR (${#PACKAGES[@]} extra packages)"
pkgs="$(
  IFS=,
  echo "${PACKAGES[*]}"
)"
# The hooks are run by mmdebstrap with the rootfs as $1: single quotes on purpose.
# shellcheck disable=SC2016
run mmdebstrap \
  --mode=root \
  --variant=minbase \
  --format=directory \
  --components=main \
  --include="$pkgs" \
  --aptopt='Acquire::Retries "5"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --essential-hook="echo '$FSTAB_LINE' >\"\$1/etc/fstab\"" \
  --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo FSTYPE=ext4 >"$1/etc/initramfs-tools/conf.d/bakery-fstype"' \
  --customize-hook='echo MODULES=list >"$1/etc/initramfs-tools/conf.d/bakery-modules" && printf "%s\n" virtio_pci virtio_blk >>"$1/etc/initramfs-tools/modules" && chroot "$1" update-initramfs -u -k all' \
  --customize-hook='echo "grub-pc grub-pc/install_devices multiselect /dev/vda" | chroot "$1" debconf-set-selections' \
  "$SUITE" "$ROOTFS" \
  "deb $MIRROR $SUITE main" \
  "deb $MIRROR $SUITE-updates main" \
  "deb $SECURITY_MIRROR $SUITE-security main" ||
  die "mmdebstrap failed (network to $MIRROR? see the log)"

# ---------------------------------------------------------------- 2. configure
log "configuring the rootfs"

echo "bakery" >"$ROOTFS/etc/hostname"
cat >"$ROOTFS/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	bakery
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
# (fstab and initramfs-tools' FSTYPE=ext4 are written by the essential hooks, before the kernel's
# initramfs is generated: in a chroot the root device cannot be probed, and without them the
# initramfs would carry no fsck.ext4.)
grep -qxF "$FSTAB_LINE" "$ROOTFS/etc/fstab" || die "the rootfs /etc/fstab is not the one written by the essential hook"

# DHCP on the first (any) Ethernet NIC; DNS through systemd-resolved.
cat >"$ROOTFS/etc/systemd/network/10-bakery-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
EOF
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$ROOTFS/etc/resolv.conf"

# GRUB: no menu delay, kernel messages on the serial console too, and GRUB's text console instead of its
# graphical terminal (which reads a 2 MB font and switches video modes: seconds under TCG, for a menu
# that is never shown).
sed -i \
  -e 's/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=0/' \
  -e 's/^GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"/' \
  -e 's/^#\?GRUB_TERMINAL=.*/GRUB_TERMINAL=console/' \
  "$ROOTFS/etc/default/grub"
grep -q '^GRUB_TIMEOUT=0$' "$ROOTFS/etc/default/grub" || die "could not set GRUB_TIMEOUT in /etc/default/grub"
grep -q '^GRUB_TERMINAL=console$' "$ROOTFS/etc/default/grub" || die "could not set GRUB_TERMINAL in /etc/default/grub"

# sshd: keys only, root by key only.
mkdir -p "$ROOTFS/etc/ssh/sshd_config.d"
cat >"$ROOTFS/etc/ssh/sshd_config.d/50-bakery.conf" <<'EOF'
# image bakery: no password logins at all; root only with a key.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
# Host keys are generated at first boot (bakery-ssh-hostkeys.service). RSA is left out on
# purpose: a 3072-bit RSA key takes ~15 s to generate under TCG, on every new VM.
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
EOF

# No SSH host keys in the image; generate them on boot, before sshd.
rm -f "$ROOTFS"/etc/ssh/ssh_host_*
cat >"$ROOTFS/usr/local/sbin/bakery-ssh-hostkeys" <<'EOF'
#!/bin/sh
# Generate the SSH host keys sshd is configured for (50-bakery.conf) if they are missing.
set -eu
for type in ed25519 ecdsa; do
  key=/etc/ssh/ssh_host_${type}_key
  if [ ! -s "$key" ]; then
    rm -f "$key" "$key.pub"
    ssh-keygen -q -t "$type" -N "" -C "root@$(hostname)" -f "$key"
    echo "bakery: generated $key"
  fi
done
EOF
chmod 0755 "$ROOTFS/usr/local/sbin/bakery-ssh-hostkeys"
cat >"$ROOTFS/etc/systemd/system/bakery-ssh-hostkeys.service" <<'EOF'
[Unit]
Description=Generate missing SSH host keys (image bakery)
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/bakery-ssh-hostkeys

[Install]
WantedBy=multi-user.target
EOF

# Ephemeral root key from the hypervisor (QEMU fw_cfg), before sshd.
cat >"$ROOTFS/usr/local/sbin/bakery-fwcfg-ssh-keys" <<'EOF'
#!/bin/sh
# Install /root/.ssh/authorized_keys from the QEMU fw_cfg blob opt/bakery/authorized_keys, if the
# hypervisor passed one (qemu ... -fw_cfg name=opt/bakery/authorized_keys,file=key.pub).
# Without the blob (any other hypervisor, or a normal boot) this does nothing.
set -eu
blob=/sys/firmware/qemu_fw_cfg/by_name/opt/bakery/authorized_keys/raw
[ -e "$blob" ] || modprobe -q qemu_fw_cfg 2>/dev/null || true
if [ ! -e "$blob" ]; then
  echo "bakery: no fw_cfg authorized_keys blob; leaving /root/.ssh alone"
  exit 0
fi
umask 077
install -d -m 0700 -o root -g root /root/.ssh
tmp=$(mktemp /root/.ssh/.authorized_keys.XXXXXX)
cat "$blob" >"$tmp"
chmod 0600 "$tmp"
mv -f "$tmp" /root/.ssh/authorized_keys
echo "bakery: installed /root/.ssh/authorized_keys from fw_cfg ($(wc -l </root/.ssh/authorized_keys) key(s))"
EOF
chmod 0755 "$ROOTFS/usr/local/sbin/bakery-fwcfg-ssh-keys"
cat >"$ROOTFS/etc/systemd/system/bakery-fwcfg-ssh-keys.service" <<'EOF'
[Unit]
Description=Install root authorized_keys from QEMU fw_cfg (image bakery)
Before=ssh.service
After=local-fs.target systemd-modules-load.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/bakery-fwcfg-ssh-keys

[Install]
WantedBy=multi-user.target
EOF

# apt: no translation indexes (saves a download on every apt-get update of a derived image).
echo 'Acquire::Languages "none";' >"$ROOTFS/etc/apt/apt.conf.d/99bakery-no-translations"

# Provenance.
cat >"$ROOTFS/etc/bakery-base" <<EOF
NAME=$NAME
SUITE=$SUITE
RECIPE_HASH=$RECIPE_HASH
BUILT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF

run chroot "$ROOTFS" systemctl enable \
  systemd-networkd.service systemd-resolved.service ssh.service \
  bakery-ssh-hostkeys.service bakery-fwcfg-ssh-keys.service
# The image is never interactive: do not let a first boot prompt on the console. e2scrub_reap looks for
# stale LVM snapshots of e2scrub at every boot; the image has no LVM, so it only costs boot time.
run chroot "$ROOTFS" systemctl mask systemd-firstboot.service e2scrub_reap.service
# Root: no usable password, ever (sshd also refuses passwords).
run chroot "$ROOTFS" usermod -p '!' root
root_pw="$(awk -F: '$1 == "root" { print $2 }' "$ROOTFS/etc/shadow")"
case "$root_pw" in '!'* | '*'*) ;; *) die "root password is not locked in the rootfs (shadow field '$root_pw')" ;; esac
rm -rf "$ROOTFS/root/.ssh"

# Unique per boot of each derived image: empty machine-id (systemd makes one on first boot).
: >"$ROOTFS/etc/machine-id"
rm -f "$ROOTFS/var/lib/dbus/machine-id"

# Kernel + initrd for the one-shot boot.
KERNEL="$(find "$ROOTFS/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)"
INITRD="$(find "$ROOTFS/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n1)"
if [ -z "$KERNEL" ] || [ -z "$INITRD" ]; then
  die "no kernel/initrd in $ROOTFS/boot (did linux-image-amd64 install?)"
fi
cp "$KERNEL" "$WORK/vmlinuz"
cp "$INITRD" "$WORK/initrd.img"

# The one-shot PID 1 for the grub boot; it deletes itself before powering off.
cat >"$ROOTFS/bakery-grub-oneshot" <<'EOF'
#!/bin/sh
# Runs as PID 1 (init=) in the one-shot boot: install GRUB into the MBR and write grub.cfg.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mountpoint -q /run || mount -t tmpfs tmpfs /run
# Run from /run so that no file of the root fs stays open: / can be remounted read-only at the end.
if [ "$0" != /run/bakery-grub-oneshot ]; then
  cp "$0" /run/bakery-grub-oneshot
  exec /bin/sh /run/bakery-grub-oneshot # /run may be noexec
fi
mount -o remount,rw /
status=FAILED
if grub-install --target=i386-pc /dev/vda && update-grub; then
  status=OK
fi
rm -f /bakery-grub-oneshot
sync
if ! mount -o remount,ro /; then
  echo "bakery: could not remount / read-only"
  status=FAILED
fi
sync
echo "BAKERY-ONESHOT-RESULT=$status"
echo o >/proc/sysrq-trigger
sleep 60
EOF
chmod 0755 "$ROOTFS/bakery-grub-oneshot"

# Leave nothing from the build host behind.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/*
find "$ROOTFS/var/log" -type f -exec truncate -s 0 {} +

# ---------------------------------------------------------------- 3. partition image + disk
log "mke2fs -d into an ext4 partition image"
PART_SIZE_MIB=$((DISK_SIZE_MIB - PART_START_MIB))
truncate -s "${PART_SIZE_MIB}M" "$WORK/root.ext4"
run mke2fs -q -F -t ext4 -L bakery-root -U "$ROOT_UUID" -E root_owner=0:0 -d "$ROOTFS" "$WORK/root.ext4" ||
  die "mke2fs -d failed (is the rootfs larger than ${PART_SIZE_MIB} MiB?)"
rm -rf --one-file-system "$ROOTFS"

log "assembling the MBR disk (${DISK_SIZE_MIB} MiB, partition 1 at ${PART_START_MIB} MiB)"
truncate -s "${DISK_SIZE_MIB}M" "$WORK/disk.raw"
printf 'label: dos\nunit: sectors\n\nstart=%d, type=83, bootable\n' $((PART_START_MIB * 2048)) |
  run sfdisk --no-reread --no-tell-kernel "$WORK/disk.raw" || die "sfdisk failed"
run dd if="$WORK/root.ext4" of="$WORK/disk.raw" bs=1M seek="$PART_START_MIB" conv=notrunc,sparse status=none
rm -f "$WORK/root.ext4"

# ---------------------------------------------------------------- 4. one-shot grub boot
log "one-shot QEMU boot ($ACCEL) to grub-install /dev/vda + update-grub"
SERIAL_LOG="$WORK/oneshot-serial.log"
timeout -k 10 "$BOOT_TIMEOUT" qemu-system-x86_64 \
  -machine "pc,accel=$ACCEL" -m 1024 -smp 2 \
  -nodefaults -display none -no-reboot \
  -drive "file=$WORK/disk.raw,format=raw,if=virtio,cache=unsafe" \
  -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" \
  -append "root=/dev/vda1 rw console=ttyS0,115200n8 init=/bakery-grub-oneshot panic=-1" \
  -serial "file:$SERIAL_LOG" >>"$BUILD_LOG" 2>&1 &
QEMU_PID=$!
qemu_rc=0
wait "$QEMU_PID" || qemu_rc=$?
QEMU_PID=""
{
  echo "--- one-shot serial console ---"
  cat "$SERIAL_LOG" 2>/dev/null || true
} >>"$BUILD_LOG"
[ "$qemu_rc" -ne 124 ] || die "the one-shot grub boot did not finish within ${BOOT_TIMEOUT}s (accelerator $ACCEL); see the serial console in the log"
[ "$qemu_rc" -eq 0 ] || die "QEMU failed (exit $qemu_rc) during the one-shot grub boot"
grep -q 'BAKERY-ONESHOT-RESULT=OK' "$SERIAL_LOG" ||
  die "grub-install/update-grub did not succeed in the one-shot boot; see the serial console in the log"

# ---------------------------------------------------------------- 5. qcow2 + checksum + publish
log "qemu-img convert -c to qcow2"
run qemu-img convert -c -f raw -O qcow2 "$WORK/disk.raw" "$WORK/image.qcow2"
rm -f "$WORK/disk.raw"
digest="$(sha256sum "$WORK/image.qcow2" | cut -d' ' -f1)"
printf '%s  %s\n' "$digest" "$(basename "$IMAGE")" >"$WORK/image.qcow2.sha256"
chmod 0444 "$WORK/image.qcow2" "$WORK/image.qcow2.sha256"
# The .sha256 lands first: the qcow2 appearing is what marks the image complete.
mv -f "$WORK/image.qcow2.sha256" "$IMAGE.sha256"
mv -f "$WORK/image.qcow2" "$IMAGE"
publish_stable

# Keep the newest $KEEP recipes' images (the current one always).
mapfile -t old < <(
  find "$BASE_DIR" -maxdepth 1 -name "$NAME-*.qcow2" ! -path "$IMAGE" -printf '%T@ %p\n' |
    sort -rn | cut -d' ' -f2- | tail -n +"$KEEP"
)
for f in "${old[@]}"; do
  [ -n "$f" ] || continue
  log "pruning old base image $(basename "$f")"
  rm -f "$f" "$f.sha256" "$LOG_DIR/$(basename "$f" .qcow2).log"
done

log "done: $IMAGE ($(du -h "$IMAGE" | cut -f1), sha256 $digest)"
echo "$STABLE"
