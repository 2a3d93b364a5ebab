#!/usr/bin/env bash
# Stand-in for the official Airflow image's /entrypoint (entrypoint_prod.sh): the parts
# docker-compose.yaml relies on, nothing else.
#   * waits for the metadata DB (CONNECTION_CHECK_MAX_COUNT tries, CONNECTION_CHECK_SLEEP_TIME
#     apart; 0 skips) unless the command is bash or python;
#   * _AIRFLOW_DB_MIGRATE non-empty: `airflow db migrate`; _AIRFLOW_WWW_USER_CREATE non-empty:
#     creates the _AIRFLOW_WWW_USER_USERNAME admin with _AIRFLOW_WWW_USER_PASSWORD (given on
#     stdin, never on a command line);
#   * `bash ...`, `python ...`, `airflow ...` run as given; anything else is an Airflow sub-command
#     (`api-server`, `celery worker`, ...) and runs as `airflow <command>`.
# dumb-init (the image's ENTRYPOINT) forwards signals; DUMB_INIT_SETSID=0 is honoured by dumb-init.
set -euo pipefail

wait_for_db() {
  local max="${CONNECTION_CHECK_MAX_COUNT:-20}" pause="${CONNECTION_CHECK_SLEEP_TIME:-3}" i
  [ "$max" -gt 0 ] || return 0
  for ((i = 1; i <= max; i++)); do
    if airflow db check >/dev/null 2>&1; then
      return 0
    fi
    echo "entrypoint: metadata database not reachable yet ($i/$max)" >&2
    sleep "$pause"
  done
  echo "entrypoint: the metadata database is not reachable after $max tries" >&2
  exit 1
}

cmd="${1:-}"
if [ "$cmd" != bash ] && [ "$cmd" != python ]; then
  wait_for_db
  if [ -n "${_AIRFLOW_DB_MIGRATE:-}" ]; then
    airflow db migrate
  fi
  if [ -n "${_AIRFLOW_WWW_USER_CREATE:-}" ]; then
    pw="${_AIRFLOW_WWW_USER_PASSWORD:?_AIRFLOW_WWW_USER_PASSWORD is empty}"
    # no tty: getpass reads the password and its confirmation from stdin
    printf '%s\n%s\n' "$pw" "$pw" | airflow users create \
        --username "${_AIRFLOW_WWW_USER_USERNAME:-admin}" \
        --firstname "${_AIRFLOW_WWW_USER_FIRSTNAME:-Airflow}" \
        --lastname "${_AIRFLOW_WWW_USER_LASTNAME:-Admin}" \
        --email "${_AIRFLOW_WWW_USER_EMAIL:-airflowadmin@example.com}" \
        --role "${_AIRFLOW_WWW_USER_ROLE:-Admin}" 2>&1 | grep -v -i password || true
    unset pw
  fi
fi

case "$cmd" in
  "") exec airflow ;;
  bash | python | airflow) exec "$@" ;;
  *) exec airflow "$@" ;;
esac
