#!/usr/bin/env python
"""kdjax's KD step vs the same step in PyTorch (RepDistiller style), alternately, in one process.

  PYTHONPATH=. python benchmarks/cpu_vs_torch.py [--rounds 5] [--steps 5] [--batch 64]

resnet32x4 -> resnet8x4, CIFAR-100 shapes (32x32x3, 100 classes), synthetic
data, batch 64: kdjax's compiled step (`kdjax bench`'s, from
configs/examples/kd.py, resnet32x4 -> resnet8x4, with a random teacher) and
torch_rd_step.TorchKDStep in PyTorch's default layout (NCHW) and channels_last.
`--folded` adds kdjax with the teacher's eval-mode BN folded into its convs
(the opt-in KDJAX_CPU_FOLD_TEACHER_BN=1), `--no_winograd` kdjax with XLA's own
3x3 convs instead of kdjax's Winograd ones (KDJAX_CPU_WINOGRAD=0).
Each round times `--steps` steps of every contestant in turn, so load from
other processes hits all of them alike; the figure per contestant is the
median step time over all rounds. Prints images/s and kdjax / PyTorch ratios.
Like the `kdjax` command, the script re-runs itself with the heap on transparent
huge pages (kdjax/huge_pages.py), which then serve both contestants;
KDJAX_HUGE_PAGES=0 runs both without.
On a GPU add `--device cuda` (PyTorch side) and `--compile` (torch.compile).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


class NotAvailable(Exception):
  pass


def contestant_config(batch: int, steps_per_dispatch: int = 1, dtype: str = '', seeds: int = 1):
  """configs/examples/kd.py at `batch`, random resnet32x4 teacher, with the variant's keys
  (tests/test_bench.py checks they are the keys kdjax reads); NotAvailable if it lacks one."""
  from kdjax import config as config_lib
  cfg = config_lib.load(os.path.join(os.path.dirname(HERE), 'configs', 'examples', 'kd.py'))
  with cfg.unlocked():
    cfg.optim.batch_size = batch
    cfg.teacher.checkpoint = ''
    cfg.teacher.arch = 'resnet32x4'
  for key, value, default in (('steps_per_dispatch', steps_per_dispatch, 1), ('num_seeds', seeds, 1),
                              ('dtype', dtype, '')):
    if value != default:
      if key not in cfg:
        raise NotAvailable(f'this kdjax has no config.{key}')
      cfg[key] = value
  return cfg


def prepared_step(cfg, env: dict | None = None):
  """`kdjax bench`'s prepared step of cfg, built (traced) with `env` set in os.environ."""
  from kdjax import bench
  with mock.patch.dict(os.environ, env or {}):
    return bench.PreparedStep(cfg)


def kdjax_contestant(batch: int, steps_per_dispatch: int = 1, dtype: str = '', seeds: int = 1,
                     env: dict | None = None):
  """(PreparedStep, images per call); NotAvailable when this kdjax lacks the variant.

  `env`: environment variables set while the step is built (kdjax reads its CPU
  options, KDJAX_CPU_FOLD_TEACHER_BN and KDJAX_CPU_WINOGRAD, when it traces).
  """
  cfg = contestant_config(batch, steps_per_dispatch, dtype, seeds)
  prep = prepared_step(cfg, env)
  assert prep.num_seeds == seeds, (prep.num_seeds, seeds)
  return prep, prep.batch_size * prep.steps_per_call * prep.num_seeds


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--rounds', type=int, default=5)
  ap.add_argument('--steps', type=int, default=5, help='steps per contestant per round')
  ap.add_argument('--batch', type=int, default=64)
  ap.add_argument('--device', default='cpu', help='PyTorch device (cpu, cuda)')
  ap.add_argument('--compile', action='store_true', help='also time torch.compile of the step')
  ap.add_argument('--no_channels_last', action='store_true')
  ap.add_argument('--torch_threads', type=int, default=0, help='torch.set_num_threads (0: default)')
  ap.add_argument('--scan', type=int, default=0, help='also kdjax with steps_per_dispatch=K')
  ap.add_argument('--bf16', action='store_true', help='also kdjax with dtype=bfloat16')
  ap.add_argument('--seeds', type=int, default=0, help='also kdjax with N vmapped seeds')
  ap.add_argument('--no_torch', action='store_true', help='kdjax variants only')
  ap.add_argument('--folded', action='store_true',
                  help='also kdjax with the teacher BN folded into its convs (KDJAX_CPU_FOLD_TEACHER_BN=1)')
  ap.add_argument('--no_winograd', action='store_true',
                  help="also kdjax with XLA's own 3x3 convs everywhere (KDJAX_CPU_WINOGRAD=0)")
  a = ap.parse_args()
  from kdjax import huge_pages
  huge_pages.reexec()   # as the kdjax command runs: before JAX (or PyTorch) starts

  import jax
  import torch
  from torch_rd_step import TorchKDStep
  if a.torch_threads:
    torch.set_num_threads(a.torch_threads)

  contestants = {}
  t0 = time.perf_counter()
  prep, images = kdjax_contestant(a.batch)
  contestants['kdjax'] = (prep, images)
  folded = type(prep.setup.teacher.model).__name__ == 'BatchNormFolded'
  print(f'kdjax: compiled in {prep.compile_s:.1f} s on {jax.device_count()} x {jax.devices()[0].device_kind}'
        f' (teacher BN folded: {folded})', flush=True)
  extra = []
  if a.scan > 1:
    extra.append((f'kdjax scan {a.scan}', dict(steps_per_dispatch=a.scan)))
  if a.bf16:
    extra.append(('kdjax bf16', dict(dtype='bfloat16')))
  if a.seeds > 1:
    extra.append((f'kdjax {a.seeds} seeds', dict(seeds=a.seeds)))
  if a.folded:
    extra.append(('kdjax folded teacher', dict(env={'KDJAX_CPU_FOLD_TEACHER_BN': '1'})))
  if a.no_winograd:
    extra.append(('kdjax no Winograd', dict(env={'KDJAX_CPU_WINOGRAD': '0'})))
  for name, kw in extra:
    try:
      p, n = kdjax_contestant(a.batch, **kw)
    except NotAvailable as e:
      print(f'{name}: not available ({e})', flush=True)
      continue
    contestants[name] = (p, n)
    print(f'{name}: compiled in {p.compile_s:.1f} s', flush=True)
  variants = [] if a.no_torch else [('torch', dict())]
  if not a.no_channels_last and not a.no_torch:
    variants.append(('torch channels_last', dict(channels_last=True)))
  if a.compile and not a.no_torch:
    variants.append(('torch.compile', dict(compile=True)))
  for name, kw in variants:
    step = TorchKDStep(batch=a.batch, device=a.device, **kw)
    step()  # warm-up (and compile)
    contestants[name] = (step, a.batch)
  print(f'set-up {time.perf_counter() - t0:.1f} s; torch {torch.__version__} with '
        f'{torch.get_num_threads()} threads, jax {jax.__version__}; {os.cpu_count()} CPUs; '
        f'heap huge pages {huge_pages.status()}; load average {os.getloadavg()[0]:.1f}', flush=True)

  times = {name: [] for name in contestants}
  for r in range(a.rounds):
    for name, (fn, _) in contestants.items():
      fn()  # one untimed step: caches warm after the other contestant ran
      for _ in range(a.steps):
        t = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - t)
    print(f'round {r + 1}/{a.rounds}: ' + ', '.join(
        f'{n} {1e3 * statistics.median(ts[-a.steps:]):.0f} ms' for n, ts in times.items()), flush=True)

  ips = {n: contestants[n][1] / statistics.median(ts) for n, ts in times.items()}
  print(f'\nresnet32x4 -> resnet8x4 KD step, batch {a.batch}, median of {a.rounds} x {a.steps} steps '
        f'(load average now {os.getloadavg()[0]:.1f}):')
  for n, v in ips.items():
    print(f'  {n:22s} {v:8.1f} images/s')
  for n, v in ips.items():
    if not n.startswith('kdjax'):
      print(f'  ratio kdjax / {n}: {ips["kdjax"] / v:.2f}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
