#!/usr/bin/env bash
# The GPU check: trains with trainer=gpu, trainer=ddp and data.pipeline=jpeg, resumes a SIGKILLed run, runs the
# bench, predict and the ONNX export on this machine's GPU, and writes one JSON of outcomes and figures
# (scripts/gpu_check.py says what is in it).
#   bash scripts/gpu_check.sh [--cpu] [--out FILE|DIR] [--work DIR] [--budget-s S] [--only CHECK,...]
# --cpu: the dry run, the same checks at small sizes on the CPU (tests/test_gpu_check.py runs it).
# --out: a folder gets <gpu>-<date>.json; default benchmarks/. The log of every command lands beside it.
#
# On a lent GPU machine (the device tool: /work/.library/device/README.md). It has torch, lightning,
# torchmetrics, onnx and onnxruntime, but neither Hydra nor a network, so:
#   1. here, in the checkout that the tool sends (the session's own), once:  bash scripts/gpu_wheels.sh
#   2. run(command="bash scripts/gpu_check.sh --out $OUT", carry=[".gpu_wheels"], timeout_s=480)
#      Every check ends within 420 s of the start (--budget-s: a command still running then is stopped and its
#      check reported failed), so the JSON and its log come back within the 480 s. Expected: about 5 minutes
#      (an estimate: it has never run on a GPU). After a fix, rerun only what failed, in the same lease:
#      run(command="bash scripts/gpu_check.sh --out $OUT --only train_ddp,bench", ...) (predict and export
#      bring train along), then give_back.
#   3. copy <gpu>-<date>.json from files_at into benchmarks/, fill the README's GPU rows from it, commit both.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

if ! "$python" -c "import hydra, omegaconf" 2>/dev/null; then
  if ! compgen -G ".gpu_wheels/*.whl" >/dev/null; then
    echo "error: Hydra is not installed here and .gpu_wheels/ is empty: run bash scripts/gpu_wheels.sh where pip" \
      "works, and carry .gpu_wheels" >&2
    exit 2
  fi
  site=$(mktemp -d)
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .gpu_wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The project from this checkout as it is, not installed: nothing to build on a machine without a network.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$python" scripts/gpu_check.py "$@"
