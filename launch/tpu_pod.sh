#!/usr/bin/env bash
# kdjax train on every host of a TPU pod slice. Run from your workstation:
#   TPU=my-pod ZONE=us-central2-b launch/tpu_pod.sh configs/imagenet.py:method=kd,teacher=resnet34,student=resnet18 gs://bucket/run
# Every host runs the same entry point as launch/local_multiprocess.py's processes,
# `python -m kdjax.runtime train ...` with KDJAX_DISTRIBUTED=1; on a pod JAX finds the
# coordinator, the process count and each host's rank itself. The multi-process path
# (global mesh, per-host input shards, orbax multi-host checkpoints, process-0 outputs)
# is tested on one machine by tests/test_multihost.py; not yet run on a real pod.
set -euo pipefail
config=$1; workdir=$2; shift 2
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command \
  "cd kdjax && KDJAX_DISTRIBUTED=1 .venv/bin/python -m kdjax.runtime train --config $config --workdir $workdir $*"
