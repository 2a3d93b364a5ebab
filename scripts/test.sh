#!/usr/bin/env bash
# Set up everything the tests need (idempotent), then run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k catalogue).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
BAKERY_TEST_TOOLS=1 bash "$REPO_ROOT/scripts/setup.sh"
cd "$REPO_ROOT"
# Two workers (pytest-xdist): the files with slow tests, each booting a 2-vCPU TCG guest, run one test
# after the other on one worker (one group: tests/conftest.py's scheduler), the rest beside them.
# BAKERY_TEST_WORKERS=0 runs everything in this process. A worker that dies fails the run
# (--max-worker-restart 0): xdist's scope scheduling hangs when it hands a dead worker's tests on.
exec python -m pytest -n "${BAKERY_TEST_WORKERS:-2}" --max-worker-restart 0 "${@:-tests}"
