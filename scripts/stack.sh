#!/usr/bin/env bash
# Bring the production stack (docker-compose.yaml: CeleryExecutor, PostgreSQL, Redis, the bakery
# image with Packer + QEMU) up or down, with Docker Compose or Podman.
#
#   scripts/stack.sh up        build the bakery image, put the VM base image into the bakery volume,
#                              start everything, wait until every healthcheck passes
#   scripts/stack.sh down      stop and remove the containers (volumes are kept)
#   scripts/stack.sh ps        what runs
#
# Needs an `.env` beside docker-compose.yaml (cp docker/.env.example .env, fill in the secrets;
# compose refuses to start without them). Engine: `docker compose` if a Docker daemon answers,
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
    [ -f .env ] || { echo "stack.sh: no .env: cp docker/.env.example .env && chmod 600 .env, then fill in the secrets" >&2; exit 1; }
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
    log "up: http://${AIRFLOW_API_BIND_ADDRESS:-0.0.0.0}:${AIRFLOW_API_PORT:-8080} (user ${AIRFLOW_ADMIN_USERNAME:-admin}, password from .env)"
    ;;
  down) compose down ;;
  ps) compose ps ;;
  *) echo "usage: stack.sh up|down|ps" >&2; exit 2 ;;
esac
