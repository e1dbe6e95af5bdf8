#!/usr/bin/env bash
# The GPU check: trains with trainer=gpu, trainer=ddp and data.pipeline=jpeg, resumes a SIGKILLed run, runs the
# bench, predict and the ONNX export on this machine's GPU, and writes one JSON of outcomes and figures
# (scripts/gpu_check.py says what is in it).
#   bash scripts/gpu_check.sh [--cpu] [--out FILE|DIR] [--work DIR] [--budget-s S] [--only CHECK,...]
# --cpu: the dry run, the same checks at small sizes on the CPU (tests/test_gpu_check.py runs it).
# --out: a folder gets <gpu>-<date>.json; default benchmarks/. The log of every command lands beside it.
#
# On a GPU machine with torch, lightning, torchmetrics, onnx and onnxruntime but without Hydra or a network:
#   1. where pip works, once:  bash scripts/gpu_wheels.sh   (Hydra's wheels into .gpu_wheels/, git-ignored)
#   2. bring the checkout with .gpu_wheels/ to the GPU machine and run  bash scripts/gpu_check.sh --out DIR
#      Every check ends within 420 s of the start (--budget-s: a command still running then is stopped and its
#      check reported failed), so the JSON and its log are written within about 8 minutes; expected about 5 (an
#      estimate: it has never run on a GPU). After a fix, rerun only what failed: --only train_ddp,bench
#      (predict and export bring train along).
#   3. copy <gpu>-<date>.json into benchmarks/, fill the README's GPU rows from it, commit both.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

if ! "$python" -c "import hydra, omegaconf" 2>/dev/null; then
  if ! compgen -G ".gpu_wheels/*.whl" >/dev/null; then
    echo "error: Hydra is not installed here and .gpu_wheels/ is empty: run bash scripts/gpu_wheels.sh where pip" \
      "works, and bring .gpu_wheels/ along" >&2
    exit 2
  fi
  site=$(mktemp -d)
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .gpu_wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The project from this checkout as it is, not installed: nothing to build on a machine without a network.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$python" scripts/gpu_check.py "$@"
