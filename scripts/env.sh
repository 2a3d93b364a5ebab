# Sourced by the other scripts: where everything lives. Override any of these from the environment.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT
export BAKERY_HOME="${BAKERY_HOME:-$REPO_ROOT/var}"
export BAKERY_VENV="${BAKERY_VENV:-$REPO_ROOT/.venv}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$BAKERY_HOME/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$REPO_ROOT/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$REPO_ROOT/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export AIRFLOW__CORE__EXECUTOR="${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}"
# Airflow's task supervisor notices its task process's exit only at its next wake-up, up to this many
# seconds later, when the exit races with the closing of the process's sockets (task SDK supervisor:
# _monitor_subprocess waits min_heartbeat_interval in select() with nothing left to read). Default 5: a
# worker slot stays taken up to 5 s after every task, more often after a task that loaded the Azure SDK
# (its interpreter takes longer to exit). 1 s bounds it; the price is one heartbeat a second per running task.
export AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL="${AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL:-1}"
export PYTHONPATH="$REPO_ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$BAKERY_VENV/bin:$PATH"
