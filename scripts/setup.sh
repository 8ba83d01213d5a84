#!/usr/bin/env bash
# Idempotent set-up: a venv in .venv with the CPU torch wheel, the package (editable) and its test/train extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# CPU wheel first (it lies on disk here); a plain `torch` requirement would pull a multi-GB CUDA build.
# Users with a GPU: install the torch build you want before running this script; it is kept.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[train,test]"
python -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"
