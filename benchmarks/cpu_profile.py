#!/usr/bin/env python
"""Where kdjax's CPU KD step spends its time, by kind of operation.

  XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true PYTHONPATH=. python benchmarks/cpu_profile.py [--steps 2]

Builds the step `cpu_vs_torch.py` times (resnet32x4 -> resnet8x4, batch 64),
traces `--steps` steps with jax.profiler (a Perfetto trace: per-thunk events
need the XLA flag above), maps every traced fusion to the optimised HLO and
sums the op time per step into: teacher / student convolutions (forward and
input gradient vs filter gradient, told apart by the convolution's output
shape: a filter gradient outputs a kernel-shaped array), transposes, and the
other fusions. Op times add up over both threads, so their total exceeds the
wall time when ops overlap; the shares are what to read (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def _fusion_kinds(hlo: str) -> dict[str, str]:
  """{instruction name: kind} for every fusion of the optimised HLO text."""
  comps, cur = {}, None
  for line in hlo.split('\n'):
    m = re.match(r'^(?:ENTRY )?%?([\w.\-]+) .*\{$', line)
    if m and not line.startswith(' '):
      cur = comps[m.group(1)] = []
    elif cur is not None:
      cur.append(line)

  def convs(comp):
    out = []
    for line in comps.get(comp, []):
      m = re.search(r'= f32\[([\d,]+)\].* convolution\(', line)
      if m:
        out.append(tuple(int(d) for d in m.group(1).split(',')))
      c = re.search(r'calls=%([\w.\-]+)', line)
      if c:
        out += convs(c.group(1))
    return out

  kinds = {}
  for lines in comps.values():
    for line in lines:
      m = re.match(r'\s*(?:ROOT )?%([\w.\-]+) = .*calls=%([\w.\-]+)', line)
      if not m:
        continue
      name, who = m.group(1), 'teacher' if 'teacher_vars' in line else 'student/other'
      shapes = convs(m.group(2))
      if shapes:
        # A filter gradient's output is a kernel: [.., k, k, ..] with k <= 7, batch dim not 64.
        wgrad = all(len(s) == 4 and s[1] <= 7 and s[2] <= 7 and s[1] == s[2] for s in shapes)
        kind = 'filter-gradient conv' if wgrad and who != 'teacher' else 'conv (fwd / input grad)'
        kinds[name] = f'{who}: {kind}' + (f' x{len(shapes)}' if len(shapes) > 1 else '')
      elif 'transpose' in name:
        kinds[name] = f'{who}: transpose'
      else:
        kinds[name] = f'{who}: other fusion'
  return kinds


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--steps', type=int, default=2)
  ap.add_argument('--batch', type=int, default=64)
  a = ap.parse_args()
  if 'xla_cpu_enable_xprof_traceme' not in os.environ.get('XLA_FLAGS', ''):
    print('set XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true, or the trace has no per-op events.')
    return 2
  import jax
  import cpu_vs_torch
  prep, _ = cpu_vs_torch.kdjax_contestant(a.batch)
  prep()
  # The jitted step inside the prepared dispatcher; its optimised HLO names the traced thunks.
  from kdjax.train import inputs, loop, optim
  from kdjax import bench
  setup = prep.setup
  tx, _ = optim.stage_tx(setup, 0, prep.state['params'])
  ds = bench.synthetic_dataset(setup.config, 4 * a.batch)
  batch_fn = inputs.in_memory_batch_fn(ds, setup.config.data, seed=0, batch_size=a.batch,
                                       steps_per_epoch=setup.steps_per_epoch)
  hlo = loop.compile_stage(setup, 0, tx, batch_fn).lower(prep.state, prep.tvars, prep.data).compile().as_text()
  kinds = _fusion_kinds(hlo)
  with tempfile.TemporaryDirectory() as d:
    t0 = time.perf_counter()
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for _ in range(a.steps):
        prep()
    wall = (time.perf_counter() - t0) / a.steps
    trace = json.load(gzip.open(glob.glob(os.path.join(d, '**', '*.trace.json.gz'), recursive=True)[0]))
  per_kind = collections.Counter()
  for e in trace['traceEvents'] if isinstance(trace, dict) else trace:
    if e.get('ph') == 'X':
      name = e['name']
      kind = kinds.get(name, 'copy / small op' if re.match(r'^[\w\-]+(\.\d+)?$', name) and name not in (
          'ThunkExecutor::Execute',) and not name.startswith(('$', 'ThunkExecutor', 'Slinky')) else None)
      if kind:
        per_kind[re.sub(r' x\d+$', '', kind)] += e.get('dur', 0) / 1e3 / a.steps
  total = sum(per_kind.values())
  print(f'wall {1e3 * wall:.0f} ms per step (profiled), op time {total:.0f} ms per step summed over threads, '
        f'load average {os.getloadavg()[0]:.1f}')
  for k, v in per_kind.most_common():
    print(f'  {v:8.1f} ms  {100 * v / total:5.1f}%  {k}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
