#!/usr/bin/env bash
# Set up everything (idempotent), then bake the embedded local default image once through the
# real Airflow DAG (`airflow dags test`): validate -> build -> smoke test -> publish -> prune.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
IMAGE="${1:-debian12-nginx}"
DAG_ID="bake_${IMAGE//-/_}"
bash "$REPO_ROOT/scripts/setup.sh"
mkdir -p "$BAKERY_HOME/logs"
log="$BAKERY_HOME/logs/bake-$IMAGE-$(date -u +%Y%m%dT%H%M%SZ).log"
echo "[bake] running DAG $DAG_ID (full log: $log)" >&2
start=$(date +%s)
if ! airflow dags test "$DAG_ID" >"$log" 2>&1; then
  grep -E "ERROR|Error|error" "$log" | tail -20 >&2 || true
  echo "[bake] the DAG run failed; see $log" >&2
  exit 1
fi
echo "[bake] DAG run succeeded in $(( $(date +%s) - start ))s" >&2
python "$REPO_ROOT/benchmarks/stage_times.py" "$DAG_ID"
python -m bakery.cli show "$IMAGE"
