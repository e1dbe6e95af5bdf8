#!/usr/bin/env bash
# Download Oxford-IIIT Pet (verified, idempotent). A thin wrapper: the same Python runs in the Modal container.
#   bash data/download.sh [--root DIR] [--base-url URL] [--checksums FILE] [--force]
set -euo pipefail
# Run from the caller's directory (relative paths mean what the caller means), with the checkout importable.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m cats_model.download "$@"
