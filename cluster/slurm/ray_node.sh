#!/usr/bin/env bash
# One Ray node of a Slurm job, started by srun on each node (see sweep.sbatch):
#   ray_node.sh head PORT        the head (GCS) on this node
#   ray_node.sh worker ADDRESS   a worker joining the head at ADDRESS (HOST:PORT)
# The node stops when srun's step is signalled (the job ends, or sweep.sbatch stops it).
set -euo pipefail
role="$1"
target="$2"
ip="${RAY_NODE_IP:-$(hostname -I | awk '{print $1}')}"
tmp="${RAY_TMP_ROOT:-/tmp}/r${SLURM_JOB_ID:-0}-${role:0:1}${SLURM_PROCID:-0}"  # short: socket paths
common=(--block --node-ip-address="$ip" --num-cpus="${SLURM_CPUS_PER_TASK:-1}" --temp-dir="$tmp")
# The GPUs Slurm gave this node (--gpus-per-node, --gres=gpu:N or --gpus=N all set
# SLURM_GPUS_ON_NODE); without it Ray counts the GPUs it can see (CUDA_VISIBLE_DEVICES).
gpus="${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-}}"
[[ -n "$gpus" ]] && common+=(--num-gpus="${gpus##*:}")
if [[ "$role" == head ]]; then
  exec ray start --head --port="$target" --ray-client-server-port="${RAY_CLIENT_PORT:-10001}" \
    --include-dashboard=false "${common[@]}"
else
  exec ray start --address="$target" "${common[@]}"
fi
