#!/usr/bin/env bash
# Idempotent set-up: a venv with the CPU torch wheel, the package (editable) and its test/train extras.
#   VENV=path                  the venv (default .venv)
#   TRANSFORMERS_VERSION=X     pin transformers to X (CI: the oldest release we support), or `newest` for the newest
#                              release in pyproject's range even where the venv already has an older one
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# CPU wheel first (it lies on disk here); a plain `torch` requirement would pull a multi-GB CUDA build.
# Users with a GPU: install the torch build you want before running this script; it is kept.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[train,test,demo,integrations]"
case "${TRANSFORMERS_VERSION:-}" in
  "") ;;
  newest) python -m pip install -q --upgrade "$(python scripts/requirement.py transformers)" ;;
  *) python -m pip install -q "transformers==$TRANSFORMERS_VERSION" ;;
esac
python -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"
