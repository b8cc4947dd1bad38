#!/usr/bin/env bash
# Launch a recipe with accelerate: scripts/launch.sh [--config ACCELERATE_CONFIG] RECIPE [key=value ...]
# Without --config: recipes/accelerate/gpu_ddp.yaml on all visible GPUs, or cpu_ddp.yaml (2 processes) without GPUs.
# The same as: accelerate launch --config_file CONFIG -m align train RECIPE [key=value ...]
set -euo pipefail
config=""
if [[ ${1:-} == --config ]]; then config=$2; shift 2; fi
recipe=${1:?usage: scripts/launch.sh [--config ACCELERATE_CONFIG] RECIPE.yaml [key=value ...]}; shift
here=$(cd "$(dirname "$0")/.." && pwd)
n=$(python -c "import torch; print(torch.cuda.device_count())")
extra=()
if [[ -z $config ]]; then
  if [[ $n -gt 0 ]]; then config=$here/recipes/accelerate/gpu_ddp.yaml; extra=(--num_processes "$n")
  else config=$here/recipes/accelerate/cpu_ddp.yaml; fi
fi
exec accelerate launch --config_file "$config" "${extra[@]}" -m align train "$recipe" "$@"
