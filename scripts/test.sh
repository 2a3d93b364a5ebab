#!/usr/bin/env bash
# Set up everything the tests need (idempotent), then run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k catalogue).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
BAKERY_TEST_TOOLS=1 bash "$REPO_ROOT/scripts/setup.sh"
cd "$REPO_ROOT"
exec python -m pytest "${@:-tests}"
