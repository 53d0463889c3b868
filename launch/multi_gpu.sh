#!/usr/bin/env bash
# kdjax train on GPUs as one multi-process JAX job.
#
# One machine, N GPUs, one process per GPU (one process driving all GPUs, plain
# `launch/local.sh`, is usually simpler and as fast):
#   GPUS=8 launch/multi_gpu.sh CONFIG WORKDIR [--config.x=y ...]
# Several machines: run this on every node with the same COORDINATOR (node 0's
# host:port), NODES and its own NODE_RANK; each node runs one process for all its GPUs:
#   COORDINATOR=node0:12355 NODES=4 NODE_RANK=$i launch/multi_gpu.sh CONFIG WORKDIR
# Both use the entry point of launch/local_multiprocess.py: `python -m kdjax.runtime`
# with KDJAX_DISTRIBUTED=1 and KDJAX_COORDINATOR / KDJAX_NUM_PROCESSES / KDJAX_PROCESS_ID.
set -euo pipefail
config=$1; workdir=$2; shift 2
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [[ -n "${COORDINATOR:-}" ]]; then
  export KDJAX_DISTRIBUTED=1 KDJAX_COORDINATOR=$COORDINATOR KDJAX_NUM_PROCESSES=${NODES:?set NODES} \
         KDJAX_PROCESS_ID=${NODE_RANK:?set NODE_RANK}
  exec "$PY" -m kdjax.runtime train --config "$config" --workdir "$workdir" "$@"
fi
exec "$PY" launch/local_multiprocess.py --processes "${GPUS:?set GPUS (or COORDINATOR for several nodes)}" \
  --platform cuda --one_gpu_each -- train --config "$config" --workdir "$workdir" "$@"
