#!/usr/bin/env bash
# Wheels of what the GPU machine lacks (Hydra, OmegaConf and ANTLR's runtime; it has the rest), for its Python
# 3.12, into .gpu_wheels/ (git-ignored): scripts/gpu_check.sh installs them there with --no-index.
# The versions are those installed here, where the test suite passes with them. All three are pure Python;
# antlr4-python3-runtime 4.9.3 is published as source only, so its wheel is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
specs=$("$python" -c 'from importlib.metadata import version as v
print(" ".join(f"{n}=={v(n)}" for n in ("hydra-core", "omegaconf", "antlr4-python3-runtime")))')
rm -rf .gpu_wheels.partial && mkdir .gpu_wheels.partial
"$python" -m pip wheel -q --no-deps --wheel-dir .gpu_wheels.partial $specs
for wheel in .gpu_wheels.partial/*.whl; do
  case "$wheel" in
    *-py3-none-any.whl | *-py2.py3-none-any.whl) ;;
    *) echo "error: $wheel is not pure Python: it would not install on the GPU machine's Python 3.12" >&2; exit 1 ;;
  esac
done
rm -rf .gpu_wheels && mv .gpu_wheels.partial .gpu_wheels
ls .gpu_wheels
