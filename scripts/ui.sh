#!/usr/bin/env bash
# Run the Airflow UI locally (`airflow standalone`) with our dags/ and plugins/.
# Login: user "admin", password printed below (generated once, kept in $AIRFLOW_HOME, mode 0600).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$REPO_ROOT/scripts/setup.sh"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin"
pwfile="$AIRFLOW_HOME/simple_auth_manager_passwords.json"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$pwfile"
if [ ! -s "$pwfile" ]; then
  umask 077
  python - "$pwfile" <<'PY'
import json, secrets, sys
json.dump({"admin": secrets.token_urlsafe(12)}, open(sys.argv[1], "w"))
PY
fi
echo "[ui] Airflow UI on http://127.0.0.1:8080  login: admin / $(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$pwfile")"
echo "[ui] (password stored in $pwfile)"
exec airflow standalone
