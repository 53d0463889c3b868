#!/usr/bin/env python
"""Student train steps (CE, batch 64, CIFAR-100 shapes), kdjax vs PyTorch, alternately, in one process.

  PYTHONPATH=. python benchmarks/students_vs_torch.py [--archs mobilenetv2,wrn_40_2] [--rounds 5]

kdjax: `kdjax bench`'s prepared step of configs/rd_cifar100.py:arch=A (the
teacher recipe: SGD, on-device crop and flip). PyTorch: the reference network
of tests/torch_refs (the one kdjax's parity tests compare against), NCHW, SGD
with momentum and weight decay, on a fixed batch. Like the `kdjax` command the
script runs with the heap on transparent huge pages (kdjax/huge_pages.py), for
both contestants; KDJAX_HUGE_PAGES=0 runs both without.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--archs', default='mobilenetv2,shufflenetv2,resnet8x4,wrn_40_2')
  ap.add_argument('--rounds', type=int, default=5)
  ap.add_argument('--steps', type=int, default=4, help='steps per contestant per round')
  ap.add_argument('--no_winograd', action='store_true',
                  help="also kdjax with XLA's own 3x3 convs everywhere (KDJAX_CPU_WINOGRAD=0)")
  a = ap.parse_args()
  from kdjax import huge_pages
  huge_pages.reexec()
  import torch
  import torch.nn.functional as F
  import torch_refs
  from cpu_vs_torch import prepared_step
  from kdjax import main as cli
  for arch in a.archs.split(','):
    cfg = cli._load_config(f'{ROOT}/configs/rd_cifar100.py:arch={arch}', [])
    prep = prepared_step(cfg)
    net = torch_refs.build(arch, 100).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(prep.batch_size, 3, 32, 32), torch.randint(0, 100, (prep.batch_size,))

    def torch_step():
      out = net(x)
      loss = F.cross_entropy(out[0] if isinstance(out, tuple) else out, y)
      opt.zero_grad()
      loss.backward()
      opt.step()

    contestants = {'kdjax': prep, 'torch': torch_step}
    if a.no_winograd:
      contestants['kdjax no Winograd'] = prepared_step(cfg, {'KDJAX_CPU_WINOGRAD': '0'})
    times = {k: [] for k in contestants}
    for fn in contestants.values():
      fn()
    for _ in range(a.rounds):
      for k, fn in contestants.items():
        fn()  # untimed: caches warm after the other contestant
        for _ in range(a.steps):
          t = time.perf_counter()
          fn()
          times[k].append(time.perf_counter() - t)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    other = (f'  no Winograd {ms["kdjax no Winograd"]:7.1f} ms (speed / torch '
             f'{ms["torch"] / ms["kdjax no Winograd"]:.2f})' if a.no_winograd else '')
    print(f'{arch:14s} kdjax {ms["kdjax"]:7.1f} ms  torch {ms["torch"]:7.1f} ms  kdjax speed / '
          f'torch {ms["torch"] / ms["kdjax"]:.2f}{other}  ({torch.get_num_threads()} torch threads, '
          f'heap huge pages {huge_pages.status()})', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
