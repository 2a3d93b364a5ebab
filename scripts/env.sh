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
export PYTHONPATH="$REPO_ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$BAKERY_VENV/bin:$PATH"
