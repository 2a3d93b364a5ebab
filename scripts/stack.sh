#!/usr/bin/env bash
# Bring the production stack (docker-compose.yaml: CeleryExecutor, PostgreSQL, Redis, the bakery
# image with Packer + QEMU) up or down, with Docker Compose or Podman.
#
#   scripts/stack.sh secrets   make the secret files docker-compose.yaml mounts (once; random values,
#                              in $BAKERY_SECRETS_DIR, default ./secrets, a 0700 folder)
#   scripts/stack.sh up        build the bakery image, put the VM base image into the bakery volume,
#                              start everything, wait until every healthcheck passes
#   scripts/stack.sh down      stop and remove the containers (volumes are kept)
#   scripts/stack.sh ps        what runs
#
# Needs the secret files (`stack.sh secrets`); an `.env` beside docker-compose.yaml is optional
# (settings with defaults: docker/.env.example). Engine: `docker compose` if a Docker daemon answers,
# else Podman (`podman-compose`, with docker/containers.conf: the runc runtime and ulimits that
# Debian 12 hosts of this kind need); force one with BAKERY_COMPOSE=docker|podman.
# The images are the real ones (apache/airflow, postgres, redis) pulled from their registry.
#
# The VM base image: the Celery worker runs as the airflow user and cannot build it (mmdebstrap
# needs root), so `up` builds it on this host (scripts/build-base-image.sh, cached) and copies it
# into the bakery volume when the volume does not have it yet.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"
action="${1:-up}"
project="${COMPOSE_PROJECT_NAME:-image-bakery}"
log() { printf '[stack] %s\n' "$*" >&2; }

# Compose resolves the secrets' files from here (absolute: podman wants absolute bind-mount sources)
BAKERY_SECRETS_DIR="$(realpath -m "${BAKERY_SECRETS_DIR:-$REPO_ROOT/secrets}")"
export BAKERY_SECRETS_DIR
SECRETS=(postgres_password airflow_db_url airflow_result_backend airflow_fernet_key airflow_jwt_secret
         airflow_api_secret_key airflow_admin_password)

make_secrets() {
  # Random values written straight to files by Python (never on a command line, never printed); a
  # file that exists is kept (the Fernet key above all: what it encrypted cannot be read without it).
  # The folder is 0700; the files 0444 so that the containers' users read them through their mounts,
  # without a trailing newline (Airflow uses the output of a *_CMD option as it is).
  install -d -m 0700 "$BAKERY_SECRETS_DIR"
  python3 - "$BAKERY_SECRETS_DIR" <<'PY'
import base64, os, secrets, sys
from pathlib import Path
d = Path(sys.argv[1])
def keep_or(name, make):
    f = d / name
    if not f.exists():
        tmp = d / f".{name}.tmp"
        tmp.write_text(make())  # no newline: Airflow uses a *_CMD's output as it is
        tmp.chmod(0o444)
        tmp.rename(f)
    return f.read_text().strip()
pw = keep_or("postgres_password", lambda: secrets.token_hex(24))  # URL-safe: it goes into two URLs
keep_or("airflow_db_url", lambda: f"postgresql+psycopg2://airflow:{pw}@postgres/airflow")
keep_or("airflow_result_backend", lambda: f"db+postgresql+psycopg2://airflow:{pw}@postgres/airflow")
keep_or("airflow_fernet_key", lambda: base64.urlsafe_b64encode(os.urandom(32)).decode())
keep_or("airflow_jwt_secret", lambda: secrets.token_hex(32))
keep_or("airflow_api_secret_key", lambda: secrets.token_hex(32))
keep_or("airflow_admin_password", lambda: secrets.token_urlsafe(18))
PY
  log "secrets in $BAKERY_SECRETS_DIR: ${SECRETS[*]}"
}

check_secrets() {
  local name missing=()
  for name in "${SECRETS[@]}"; do [ -s "$BAKERY_SECRETS_DIR/$name" ] || missing+=("$name"); done
  [ "${#missing[@]}" = 0 ] || { echo "stack.sh: missing secret files in $BAKERY_SECRETS_DIR: ${missing[*]} (run: scripts/stack.sh secrets)" >&2; exit 1; }
  for name in "${SECRETS[@]}"; do
    # Airflow takes the output of `cat /run/secrets/<name>` as it is: a trailing newline would end up
    # in the database URL or the key
    [ "$(tail -c 1 "$BAKERY_SECRETS_DIR/$name" | od -An -c | tr -d ' ')" != '\n' ] ||
      { echo "stack.sh: $BAKERY_SECRETS_DIR/$name ends with a newline; write it without one (printf '%s' ...)" >&2; exit 1; }
  done
}

if [ "$action" = secrets ]; then
  make_secrets
  exit 0
fi

engine="${BAKERY_COMPOSE:-}"
if [ -z "$engine" ]; then
  if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman-compose >/dev/null 2>&1; then
    engine=podman
  else
    echo "stack.sh: neither a working 'docker compose' nor podman-compose (apt-get install podman podman-compose runc)" >&2
    exit 1
  fi
fi
case "$engine" in
  docker)
    compose() { docker compose -p "$project" -f docker-compose.yaml "$@"; }
    ctl=docker
    ;;
  podman)
    export CONTAINERS_CONF="${CONTAINERS_CONF:-$REPO_ROOT/docker/containers.conf}"
    compose() { podman-compose -p "$project" -f docker-compose.yaml "$@"; }
    ctl=podman
    ;;
  *) echo "stack.sh: BAKERY_COMPOSE must be docker or podman, not '$engine'" >&2; exit 2 ;;
esac

# podman-compose (1.0.3, Debian 12) neither waits for depends_on conditions nor, without systemd,
# runs healthchecks by itself: both engines are driven the same way, in the order the conditions
# describe, each healthcheck run until it passes.
container() {
  if [ "$engine" = docker ]; then compose ps -q "$1"; else echo "${project}_$1_1"; fi
}
wait_healthy() {
  local service name deadline=$((SECONDS + ${BAKERY_STACK_TIMEOUT:-900}))
  for service in "$@"; do
    name="$(container "$service")"
    log "waiting for $service to be healthy"
    until
      if [ "$engine" = podman ]; then
        podman healthcheck run "$name" >/dev/null 2>&1
      else
        [ "$(docker inspect -f '{{.State.Health.Status}}' "$name" 2>/dev/null)" = healthy ]
      fi
    do
      [ "$SECONDS" -lt "$deadline" ] || { echo "stack.sh: $service is not healthy; '$ctl logs $name' says:" >&2; $ctl logs --tail 40 "$name" >&2; exit 1; }
      sleep 5
    done
  done
}

seed_base_image() {
  local volume="${project}_bakery-state" base mount
  base="$(bash scripts/build-base-image.sh)"  # cached on this host by recipe
  $ctl volume inspect "$volume" >/dev/null 2>&1 ||
    $ctl volume create --label "com.docker.compose.project=$project" --label "com.docker.compose.volume=bakery-state" \
      --label "io.podman.compose.project=$project" "$volume" >/dev/null
  # a throw-away container of the bakery image copies it in (works with a remote Docker daemon too)
  $ctl run --rm --user 0:0 --entrypoint /bin/bash -v "$volume:/opt/bakery" \
    -v "$(dirname "$(readlink -f "$base")"):/seed:ro" "${AIRFLOW_IMAGE_NAME:-image-bakery/airflow:3.3.2}" -c '
      set -e; f="$(basename "$1")"; mkdir -p /opt/bakery/base
      if [ ! -f "/opt/bakery/base/$f" ]; then cp "/seed/$f" "/seed/$f.sha256" /opt/bakery/base/; echo "base image $f copied into the bakery volume"; fi
      chown -R 50000:0 /opt/bakery/base' _ "$(readlink -f "$base")"
}

case "$action" in
  up)
    check_secrets
    log "engine: $engine; building the bakery image"
    compose build airflow-init
    log "the VM base image into the bakery volume"
    seed_base_image
    compose up -d --no-build postgres redis
    wait_healthy postgres redis
    compose up -d --no-build airflow-init
    rc="$($ctl wait "$(container airflow-init)")"
    [ "$rc" = 0 ] || { $ctl logs --tail 60 "$(container airflow-init)" >&2; echo "stack.sh: airflow-init failed ($rc)" >&2; exit 1; }
    compose up -d --no-build airflow-apiserver airflow-scheduler airflow-dag-processor airflow-worker airflow-triggerer
    wait_healthy airflow-apiserver airflow-scheduler airflow-dag-processor airflow-worker airflow-triggerer
    log "up: http://${AIRFLOW_API_BIND_ADDRESS:-0.0.0.0}:${AIRFLOW_API_PORT:-8080} (user ${AIRFLOW_ADMIN_USERNAME:-admin}, password in $BAKERY_SECRETS_DIR/airflow_admin_password)"
    ;;
  down) compose down ;;
  ps) compose ps ;;
  *) echo "usage: stack.sh secrets|up|down|ps" >&2; exit 2 ;;
esac
