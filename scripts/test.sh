#!/usr/bin/env bash
# Set everything up (idempotent) and run the test suite. Extra arguments go to pytest.
# VENV and TRANSFORMERS_VERSION pass through to scripts/setup.sh; TEST_WORKERS (default: one per core) sets how many
# pytest-xdist workers share the suite, a test file each at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY="${VENV:-.venv}/bin/python"
"$PY" -m pytest -q -n "${TEST_WORKERS:-auto}" --dist loadfile "$@"
# Then the `timed` tests (benchmarks: timings and timeouts) alone; exit code 5 means the arguments selected none.
"$PY" -m pytest -q --timed-only "$@" || [ $? -eq 5 ]
