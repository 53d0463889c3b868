#!/usr/bin/env python
"""Median step time, page faults and system time per step of `kdjax bench`'s prepared step.

  PYTHONPATH=. python benchmarks/page_faults.py configs/rd_cifar100.py:arch=mobilenetv2 [--steps 12]

Runs in the environment it is given (it does not re-execute itself, unlike the
`kdjax` command), so the heap's page size can be compared across processes:
  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 PYTHONPATH=. python benchmarks/page_faults.py CONFIG
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('config')
  ap.add_argument('--steps', type=int, default=12)
  a = ap.parse_args()
  from kdjax import bench, huge_pages, main as cli
  prep = bench.PreparedStep(cli._load_config(a.config, []))
  for _ in range(2):
    prep()
  r0, times = resource.getrusage(resource.RUSAGE_SELF), []
  for _ in range(a.steps):
    t = time.perf_counter()
    prep()
    times.append(time.perf_counter() - t)
  r1, n = resource.getrusage(resource.RUSAGE_SELF), len(times)
  print(f'{a.config}: heap huge pages {huge_pages.status()}; median {1e3 * statistics.median(times):.0f} '
        f'ms, min {1e3 * min(times):.0f} ms, minor faults {(r1.ru_minflt - r0.ru_minflt) / n:.0f}, '
        f'system {1e3 * (r1.ru_stime - r0.ru_stime) / n:.0f} ms, user '
        f'{1e3 * (r1.ru_utime - r0.ru_utime) / n:.0f} ms per step', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
