#!/usr/bin/env bash
# Run the Airflow UI locally with our dags/ and plugins/: what `airflow standalone` runs (API server,
# scheduler with the LocalExecutor, DAG processor, triggerer), started here so that each one can be
# kept on loopback. Login: user "admin", password printed below (generated once, kept in
# $AIRFLOW_HOME, mode 0600). Ctrl-C stops everything.
#
# Nothing listens beyond loopback unless asked:
#   * the API server binds BAKERY_UI_HOST ([api] host; default 127.0.0.1) on BAKERY_UI_PORT (8080).
#     BAKERY_UI_HOST=0.0.0.0 opts in to serving the UI to other machines;
#   * the scheduler and the triggerer run without their log servers (--skip-serve-logs): Airflow 3.3
#     binds those to every interface ([logging] worker_log_server_port / trigger_log_server_port have
#     no host setting), and with everything on this machine the API server reads the task logs from
#     $AIRFLOW_HOME/logs itself;
#   * a build's VM forwards its SSH port on 127.0.0.1 only (include/packer/shared/qemu), the smoke
#     test's VM its HTTP port, the bakery's package server listens on 127.0.0.1.
# Task slots: BAKERY_UI_PARALLELISM ([core] parallelism, one LocalExecutor worker process each, about
# 170 MB apiece): default the number of CPUs (at least 2), not Airflow's 32.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$REPO_ROOT/scripts/setup.sh"

host="${BAKERY_UI_HOST:-127.0.0.1}"
port="${BAKERY_UI_PORT:-8080}"
cpus="$(nproc 2>/dev/null || echo 2)"
export AIRFLOW__CORE__PARALLELISM="${BAKERY_UI_PARALLELISM:-${AIRFLOW__CORE__PARALLELISM:-$((cpus > 2 ? cpus : 2))}}"
case "$host" in 0.0.0.0 | :: | "") client_host=127.0.0.1 ;; *) client_host="$host" ;; esac
# the task processes reach the API server's execution API here (Airflow's default is localhost:8080)
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://$client_host:$port/execution/}"
export AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin"
pwfile="$AIRFLOW_HOME/simple_auth_manager_passwords.json"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$pwfile"
if [ ! -s "$pwfile" ]; then
  # umask 077 in a subshell: the password file is 0600, and nothing started later inherits the mask
  # (Airflow under 077 would publish versions only their owner can read)
  (
    umask 077
    python - "$pwfile" <<'PY'
import json, secrets, sys
json.dump({"admin": secrets.token_urlsafe(12)}, open(sys.argv[1], "w"))
PY
  )
fi
echo "[ui] Airflow UI on http://$client_host:$port  login: admin / $(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$pwfile")"
echo "[ui] (password stored in $pwfile; $AIRFLOW__CORE__PARALLELISM task slots; listening on $host only)"

pids=()
run() { # run NAME COMMAND...: one component in the background, its output prefixed with its name
  local name="$1"
  shift
  "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=("$!")
}
stop() {
  trap - EXIT INT TERM
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait || true
}
trap stop EXIT
trap 'exit 130' INT TERM
run api-server airflow api-server --host "$host" --port "$port"
run scheduler airflow scheduler --skip-serve-logs
run dag-processor airflow dag-processor
run triggerer airflow triggerer --skip-serve-logs
status=0
wait -n "${pids[@]}" || status=$?
echo "[ui] an Airflow component exited (status $status): stopping the others" >&2
exit 1
