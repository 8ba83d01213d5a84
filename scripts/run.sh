#!/usr/bin/env bash
# Run a command inside the project's environment, setting it up first where needed (the same idempotent set-up as
# the tests, scripts/setup.sh). For example:  bash scripts/run.sh python -m training.classify --preset cpu-small
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STAMP="$VENV/.scratchformer-setup"
# Set up on the first run, and again whenever pyproject.toml (the dependencies) changed since.
if [ ! -x "$VENV/bin/python" ] || [ ! -e "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  echo "Setting up $VENV (about a minute the first time) ..." >&2
  bash scripts/setup.sh >&2
  touch "$STAMP"
fi
. "$VENV/bin/activate"
exec "$@"
