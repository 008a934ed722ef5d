#!/usr/bin/env bash
# The GPU check on a lent GPU machine, where `python3` is the interpreter that holds torch (see docs/gpu-check.md):
#   bash scripts/gpu_check.sh OUT [gpu_check.py options]
# Offline there: the Hub and the package index are out of reach, so nothing may try them.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
