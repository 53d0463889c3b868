"""XLA settings kdjax puts in the environment before JAX starts a backend.

CPU convolutions. The XLA CPU compiler of jaxlib 0.10 hands convolutions to
YNNPACK by default. On the 2-core CPU of `benchmarks/README.md` YNNPACK ran a
3x3 convolution with 64 output channels (every convolution of a CIFAR ResNet's
first stage) on one core only: 50 ms on one core and on two, where XLA's Eigen
convolution took 30 ms on two. Switching YNNPACK's convolution fusions off made
the resnet32x4 -> resnet8x4 KD step 1.3x faster (31.9 -> 42.2 images/s against
PyTorch's 51-55, alternating in one script). Reduction fusions stay with
YNNPACK (a BatchNorm's batch sum was 7x slower without it); YNNPACK may still
absorb the convolutions feeding a reduction (the teacher's last 8x8 stage
before its pooling), where it is as fast as Eigen. Adding element-wise fusions
pulls most convolutions back into YNNPACK, so they stay off.

`apply()` runs when `kdjax` is imported (kdjax/__init__.py): it appends
`--xla_cpu_experimental_ynn_fusion_type=...` to XLA_FLAGS unless
  * XLA_FLAGS already sets that option (the user's choice wins), or
  * KDJAX_CPU_YNN_CONV=1 (keep XLA's default, e.g. to compare), or
  * the installed jaxlib is not one this option was checked with (TESTED_JAXLIB):
    XLA aborts the process on a flag it does not know, and experimental options
    come and go between releases. KDJAX_CPU_YNN_CONV=0 adds it anyway.
XLA reads XLA_FLAGS once, when the first backend starts, so a program that runs
JAX computations before importing kdjax keeps XLA's default; `kdjax bench`
reports which path its step compiled with. The option names CPU fusions only;
GPU and TPU compilations ignore it.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import warnings
from typing import MutableMapping

OPTION = 'xla_cpu_experimental_ynn_fusion_type'
# YNNPACK keeps reduction fusions; convolutions (and the rest) go to XLA's own emitters and Eigen.
VALUE = 'LIBRARY_FUSION_TYPE_REDUCE'
OPT_OUT = 'KDJAX_CPU_YNN_CONV'
TESTED_JAXLIB = ('0.10.',)   # version prefixes whose XLA knows OPTION (benchmarks/README.md)


def apply(environ: MutableMapping[str, str] | None = None, jaxlib_version: str | None = None) -> bool:
  """Adds kdjax's CPU option to XLA_FLAGS in `environ` (os.environ); True if it did."""
  env = os.environ if environ is None else environ
  choice = env.get(OPT_OUT)
  if choice == '1':
    return False
  flags = env.get('XLA_FLAGS', '')
  if OPTION in flags:
    return False
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if choice != '0' and not version.startswith(TESTED_JAXLIB):
    return False
  env['XLA_FLAGS'] = f'{flags} --{OPTION}={VALUE}'.strip()
  if environ is None and _backends_started():
    warnings.warn('kdjax was imported after JAX started its backends, so XLA keeps YNNPACK '
                  'convolutions on CPU (slower on small CPUs; kdjax/xla_env.py). Import kdjax '
                  'before running any JAX computation.', stacklevel=3)
  return True


def _jaxlib_version() -> str:
  try:
    return importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return ''


def _backends_started() -> bool:
  bridge = sys.modules.get('jax._src.xla_bridge')
  return bool(getattr(bridge, '_backends', None))


def cpu_convolutions() -> str:
  """'eigen' when this process's XLA_FLAGS routes CPU convolutions away from YNNPACK, else 'ynnpack'."""
  for flag in os.environ.get('XLA_FLAGS', '').split():
    if flag.startswith(f'--{OPTION}='):
      return 'ynnpack' if 'CONVOLUTION' in flag else 'eigen'
  return 'ynnpack'
