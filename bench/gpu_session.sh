#!/usr/bin/env bash
# The lent GPU machine's one command (../shared/device/README.md): the wheels cnnsweep lacks
# there, then bench/gpu.py, its table and JSON under $OUT. Prepare once, on this machine:
#   echo '/.dev/' >> .git/info/exclude
#   mkdir -p .dev && cp ../shared/device/wheels/*.whl ../shared/data/cifar10-jpeg.tar.xz .dev/
# then run it there with carry [".dev"] and a timeout_s that leaves room for a second try:
#   bash bench/gpu_session.sh [--budget-s 420] [other bench/gpu.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-bench-out}
mkdir -p "$out"
test -d .dev/site/optuna ||
  python3 -m pip install -q --no-index --no-deps --no-compile --target .dev/site .dev/*.whl
export PYTHONPATH="$PWD/.dev/site:$PWD" PYTHONUNBUFFERED=1 CNNSWEEP_CACHE=/tmp/cnnsweep-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, optuna, pydantic; print('torch', torch.__version__, 'optuna', \
optuna.__version__, 'pydantic', pydantic.__version__)"
python3 bench/gpu.py --data "$PWD/.dev/cifar10-jpeg.tar.xz" --json "$out/gpu.json" "$@" 2>&1 |
  tee "$out/gpu.log"
