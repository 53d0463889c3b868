#!/usr/bin/env bash
# kdjax's KD step vs RepDistiller-style PyTorch on one accelerator, side by side (< 8 minutes).
#
#   bash benchmarks/accelerator.sh            # from the kdjax checkout
#
# 1. Prints images/s for resnet32x4 -> resnet8x4, CIFAR-100 shapes, batch 64,
#    synthetic data, all in one process on the same device: kdjax (1 seed; with
#    steps_per_dispatch=8; bf16 and 5 vmapped seeds where this kdjax has them, else
#    it says they are not available) and PyTorch eager and torch.compile.
# 2. Runs RepDistiller's KD cell (the same pair, 240 epochs, evaluation and checkpoint
#    every epoch) for 3 epochs through the training driver on synthetic data of
#    CIFAR-100's size (`kdjax bench --epochs`), bf16 with 8 steps per dispatch, and
#    projects the whole run: the "240 epochs in under 10 minutes" target.
#
# What the environment needs: jax (with CUDA or TPU), flax, optax, orbax-checkpoint,
# chex, numpy, torch (with CUDA for the PyTorch side), PyYAML; and two small
# pure-Python wheels that accelerator images often lack, which kdjax's config
# system imports:
#     ml_collections-1.1.0-py3-none-any.whl   absl_py-2.*-py3-none-any.whl
# With no network, bring them along: `pip download --no-deps -d wheels ml_collections absl-py`
# on a connected machine, copy the folder, and point KDJAX_WHEELS at it
# (default: benchmarks/wheels). tensorflow-datasets and grain are NOT needed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WHEELS=${KDJAX_WHEELS:-benchmarks/wheels}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}  # leave room for PyTorch on the same GPU
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

for mod in ml_collections absl; do
  if ! $PY -c "import $mod" 2>/dev/null; then
    if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
      echo "installing $mod from $WHEELS (no network needed)"
      $PY -m pip install --no-index --find-links "$WHEELS" ml_collections absl-py || exit 1
    else
      echo "missing Python module $mod and no wheels in $WHEELS: bring ml_collections-1.1.0-py3-none-any.whl" \
           "and absl_py-2.*-py3-none-any.whl there (pip download --no-deps ml_collections absl-py)." >&2
      exit 1
    fi
  fi
done
$PY - <<'PYEOF' || exit 1
import importlib, sys
missing = [m for m in ('jax', 'flax', 'optax', 'orbax.checkpoint', 'numpy', 'torch', 'yaml')
           if importlib.util.find_spec(m.split('.')[0]) is None]
if missing:
  sys.exit(f'missing: {missing} (pip install them; kdjax bench needs no tensorflow-datasets or grain)')
import jax, torch
print(f'jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}); '
      f'torch {torch.__version__}, cuda {torch.cuda.is_available()}')
for m in ('tensorflow_datasets', 'grain'):
  print(f'{m}: {"present" if importlib.util.find_spec(m) else "absent (not needed)"}')
PYEOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

DEV=cpu
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" && DEV=cuda
# 4 rounds x 20 steps of each contestant, alternating; compile times are printed separately.
timeout 330 $PY benchmarks/cpu_vs_torch.py --device "$DEV" --compile --no_channels_last \
    --scan 8 --bf16 --seeds 5 --rounds 4 --steps 20 --batch 64
status=$?
[ $status -eq 124 ] && echo "timed out after 330 s: rerun with fewer --rounds/--steps" >&2
if [ "$DEV" = cuda ] || [ "${KDJAX_BENCH_EPOCHS:-0}" = 1 ]; then  # over 50 min on a 2-core CPU
  timeout 120 $PY -m kdjax.main bench --epochs 3 \
      --config configs/rd_cifar100.py:method=kd,teacher=resnet32x4,student=resnet8x4 \
      --config.teacher.checkpoint= --config.dtype=bfloat16 --config.steps_per_dispatch=8 \
      --config.progress_bar=False
  e=$?
  [ $e -eq 124 ] && echo "the 3-epoch run timed out after 120 s: far from 240 epochs in 10 minutes" >&2
  [ $status -eq 0 ] && status=$e
fi
exit $status
