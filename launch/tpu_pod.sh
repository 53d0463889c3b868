#!/usr/bin/env bash
# kdjax train on every host of a TPU pod slice. Run from your workstation:
#   TPU=my-pod ZONE=us-central2-b launch/tpu_pod.sh configs/imagenet/kd_resnet34_resnet18.py gs://bucket/run
# Every host runs the same command; KDJAX_DISTRIBUTED=1 makes kdjax call
# jax.distributed.initialize() so the data-parallel mesh spans all hosts.
# Not tested on a pod by the kdjax team yet (see README, "Accelerators").
set -euo pipefail
config=$1; workdir=$2; shift 2
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command \
  "cd kdjax && KDJAX_DISTRIBUTED=1 .venv/bin/kdjax train --config $config --workdir $workdir $*"
