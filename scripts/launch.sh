#!/usr/bin/env bash
# Launch a recipe on all visible GPUs (or the CPU) with accelerate: scripts/launch.sh RECIPE [key=value ...]
set -euo pipefail
recipe=${1:?usage: scripts/launch.sh RECIPE.yaml [key=value ...]}; shift
n=$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")
exec accelerate launch --num_processes "$n" -m align.cli train "$recipe" "$@"
