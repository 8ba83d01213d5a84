#!/usr/bin/env bash
# One run of bench/speed_gpu.py on a lent GPU machine (no internet): its image has torch but transformers 5.17, so
# the wheels in .whl/ (transformers 5.25.0 and the newer huggingface_hub it needs, with that one's own new
# dependencies) go into /tmp/site, ahead of the image's packages; scratchformer and bench import from the repo root.
# The results land in $OUT (speed_gpu.json, rewritten after every comparison, and speed_gpu.log).
# .whl/ is git-ignored: a copy of the work tree must bring it along explicitly. TIMEOUT_S (default 480) bounds the
# benchmark itself.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"

ls .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

nvidia-smi -L
python3 - <<'EOF'
import platform, torch, transformers, huggingface_hub, scratchformer
print("python", platform.python_version(), "| torch", torch.__version__, "cuda", torch.version.cuda,
      "| transformers", transformers.__version__, transformers.__file__,
      "| huggingface_hub", huggingface_hub.__version__, "| scratchformer", scratchformer.__version__)
print("cuda available:", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF

PYTHONUNBUFFERED=1 timeout "${TIMEOUT_S:-480}" python3 -m bench.speed_gpu --sizes large,gpu --json "$OUT/speed_gpu.json" 2>&1 | tee "$OUT/speed_gpu.log"
