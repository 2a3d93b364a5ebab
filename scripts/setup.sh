#!/usr/bin/env bash
# One-shot, idempotent set-up on Debian 12 as root: apt packages, the virtualenv (pinned),
# the Airflow metadata DB, and the Debian base image (cached by recipe).
#   scripts/setup.sh            everything
#   scripts/setup.sh --no-base  skip the base image (the tests build it themselves when needed)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

APT_PACKAGES=(packer qemu-system-x86 qemu-utils mmdebstrap fdisk e2fsprogs openssh-client curl
              ca-certificates python3 python3-venv procps)
# what only the tests need (scripts/test.sh sets BAKERY_TEST_TOOLS=1): PostgreSQL for the tests that
# run the Airflow scheduler (SQLite refuses a backfill while the scheduler writes); Chromium for the test
# that signs in to the Airflow UI and reads the gallery page
if [ "${BAKERY_TEST_TOOLS:-0}" = 1 ]; then
  APT_PACKAGES+=(postgresql chromium)  # chromium: the gallery page rendered headless (tests/e2e/test_gallery_page.py)
  # the compose stack run for real (tests/compose/): Podman 4.3 with the runc runtime (crun refuses
  # these hosts' hybrid cgroups; docker/containers.conf selects runc), podman-compose, CNI with the
  # dnsname plugin (services find each other by name on the project network)
  APT_PACKAGES+=(podman podman-compose runc containernetworking-plugins golang-github-containernetworking-plugin-dnsname)
fi

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || { echo "setup: need root to apt-get install: ${missing[*]}" >&2; exit 1; }
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The virtualenv: rebuilt only when requirements.txt or constraints.txt change.
stamp="$BAKERY_VENV/.bakery-requirements.sha256"
want="$(cat "$REPO_ROOT/requirements.txt" "$REPO_ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$BAKERY_VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating the virtualenv $BAKERY_VENV"
  PY="$(command -v python3.11 || command -v python3)"
  "$PY" -m venv "$BAKERY_VENV"
  "$BAKERY_VENV/bin/pip" install -q --disable-pip-version-check \
      -r "$REPO_ROOT/requirements.txt" -c "$REPO_ROOT/constraints.txt"
  echo "$want" > "$stamp"
fi

# Test tools (scripts/test.sh sets BAKERY_TEST_TOOLS=1; a bake does not need them):
# Azurite, Microsoft's Azure Storage emulator (npm package), for the Azure SBOM tests: pinned and
# project-local ($BAKERY_HOME/node, `npm install --prefix`), never global; reinstalled only when the
# pin changes. 3.35.0 is the newest release that runs on the Node of Debian 12 (18) and of this
# machine (20): 3.36 needs Node >= 21, 3.37 Node >= 22. The tests start it with
# --skipApiVersionCheck, as the pinned azure-storage-blob speaks a newer REST API version.
AZURITE_VERSION=3.35.0
node_dir="$BAKERY_HOME/node"
have_azurite() {
  command -v node >/dev/null 2>&1 && [ -x "$node_dir/node_modules/.bin/azurite-blob" ] &&
    [ "$(node -p "require(process.argv[1]).version" "$node_dir/node_modules/azurite/package.json" 2>/dev/null)" = "$AZURITE_VERSION" ]
}
if [ "${BAKERY_TEST_TOOLS:-0}" = 1 ] && ! have_azurite; then
  if ! command -v npm >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "setup: need root to apt-get install nodejs npm (for Azurite)" >&2; exit 1; }
    log "installing Debian packages: nodejs npm (for Azurite)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  log "installing azurite@$AZURITE_VERSION into $node_dir"
  mkdir -p "$node_dir"
  npm install --prefix "$node_dir" --no-audit --no-fund --save-exact --loglevel=error \
      "azurite@$AZURITE_VERSION" >"$node_dir/npm-install.log" 2>&1 || { tail -20 "$node_dir/npm-install.log" >&2; exit 1; }
  have_azurite || { echo "setup: azurite@$AZURITE_VERSION did not install into $node_dir" >&2; exit 1; }
fi

# The Airflow metadata DB (SQLite under $AIRFLOW_HOME for the local default).
mkdir -p "$AIRFLOW_HOME"
if [ ! -f "$AIRFLOW_HOME/.bakery-db-ready" ]; then
  log "migrating the Airflow metadata DB in $AIRFLOW_HOME"
  airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { tail -20 "$AIRFLOW_HOME/db-migrate.log" >&2; exit 1; }
  # the pool that caps concurrent Packer builds across all images (the build tasks use it)
  airflow pools set image_bakery_packer 2 "Packer builds (caps concurrent bakes across images)" >/dev/null
  touch "$AIRFLOW_HOME/.bakery-db-ready"
fi

if [ "${1:-}" != "--no-base" ]; then
  log "base image (cached by recipe)"
  bash "$REPO_ROOT/scripts/build-base-image.sh" >&2
fi
log "ready"
