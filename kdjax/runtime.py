"""Process start-up: multi-process (multi-host) initialisation and XLA flags.

Must run before anything touches a JAX backend. `initialize()` reads:

  KDJAX_DISTRIBUTED=1        join a multi-controller job (one process per host,
                             or several per host with `launch/local_multiprocess.py`).
  KDJAX_COORDINATOR          host:port of process 0 (else JAX_COORDINATOR_ADDRESS,
                             else JAX's cluster auto-detection: TPU pods, SLURM, ...).
  KDJAX_NUM_PROCESSES, KDJAX_PROCESS_ID
                             this job's size and this process's rank (auto-detected
                             when unset, as on TPU pods).

On CPU the cross-process collectives are gloo's (JAX's default), so a
multi-process run on one machine exercises the same code path as a pod:
a global mesh over every process's devices, per-host input shards, orbax's
multi-host checkpoints and process-0-only outputs.

`python -m kdjax.runtime ARGS...` is `kdjax ARGS...` after `initialize()`; the
local launcher and the pod / multi-GPU scripts start every process that way.
"""

from __future__ import annotations

import os
import sys


def distributed_requested() -> bool:
  return os.environ.get('KDJAX_DISTRIBUTED') == '1'


def initialize() -> bool:
  """Calls `jax.distributed.initialize` when KDJAX_DISTRIBUTED=1; True if it did."""
  if not distributed_requested():
    return False
  import jax
  if jax.distributed.is_initialized():
    return True
  kw = {}
  if os.environ.get('KDJAX_COORDINATOR'):
    kw['coordinator_address'] = os.environ['KDJAX_COORDINATOR']
  for env, arg in (('KDJAX_NUM_PROCESSES', 'num_processes'), ('KDJAX_PROCESS_ID', 'process_id')):
    if os.environ.get(env):
      try:
        kw[arg] = int(os.environ[env])
      except ValueError:
        raise ValueError(f'{env}={os.environ[env]!r} must be an integer.') from None
  if 'num_processes' in kw and not 0 <= kw.get('process_id', 0) < kw['num_processes']:
    raise ValueError(f'KDJAX_PROCESS_ID={kw.get("process_id")} is outside [0, '
                     f'KDJAX_NUM_PROCESSES={kw["num_processes"]}).')
  jax.distributed.initialize(**kw)
  return True


def fold_teacher_bn() -> bool:
  """Whether the frozen teacher runs with its eval-mode BatchNorm folded into its convs.

  Off unless KDJAX_CPU_FOLD_TEACHER_BN=1, and then only on a CPU backend
  (`kdjax.models.fold`). On the 2-core CPU of `benchmarks/README.md` the fold
  made no measurable difference to the KD step (within the noise of a shared
  machine), so it is an opt-in for measuring it elsewhere; the teacher's outputs
  change only by float32 rounding (tests/test_fold.py).
  """
  if os.environ.get('KDJAX_CPU_FOLD_TEACHER_BN', '0') != '1':
    return False
  import jax
  return jax.default_backend() == 'cpu'


def main(argv=None) -> int:
  initialize()
  from kdjax import main as cli
  return cli.run(sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
  sys.exit(main())
