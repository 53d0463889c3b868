"""`kdjax report`: mean +- std of results.json over runs (seeds) of one experiment.

  kdjax report runs/cifar100/kd_resnet32x4_resnet8x4_s*

Reports last-epoch and best-epoch top-1 (and every other final metric) with
the seeds it aggregated, so a table cell states exactly what it averages.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np


def load(workdirs: Sequence[str]) -> list[dict]:
  runs = []
  for d in workdirs:
    path = os.path.join(d, 'results.json')
    if not os.path.exists(path):
      raise FileNotFoundError(f'{d!r} has no results.json (unfinished run?); finish or drop it.')
    with open(path) as f:
      runs.append(json.load(f))
  return runs


def summarize(runs: list[dict]) -> dict[str, dict[str, float]]:
  """{metric: {'mean', 'std', 'n'}} over runs; std is the sample std (ddof=1)."""
  values: dict[str, list[float]] = {}
  for r in runs:
    for k, v in r['final'].items():
      if isinstance(v, (int, float)) and k not in ('epoch', 'stage'):
        values.setdefault(f'last/{k}', []).append(float(v))
    values.setdefault('best/top1', []).append(float(r['best']['top1']))
  out = {}
  for k, v in values.items():
    a = np.asarray(v)
    out[k] = {'mean': float(a.mean()), 'std': float(a.std(ddof=1)) if len(a) > 1 else 0.0,
              'n': len(a)}
  return out


def run(workdirs: Sequence[str]) -> dict:
  runs = load(workdirs)
  models = {(r.get('model'), r.get('teacher'), tuple(r.get('methods', []))) for r in runs}
  if len(models) > 1:
    raise ValueError(f'these runs are different experiments: {sorted(map(str, models))}')
  summary = summarize(runs)
  seeds = [r.get('seed') for r in runs]
  print(f'{len(runs)} runs, seeds {seeds}')
  if len(set(seeds)) < len(seeds):
    print('WARNING: some runs share a seed; the std then understates seed variance.')
  for k in ('last/top1', 'best/top1', 'last/top5', 'last/ece', 'last/aurc', 'last/teacher_agreement'):
    if k in summary:
      s = summary[k]
      print(f'  {k:24s} {100 * s["mean"]:.2f} +- {100 * s["std"]:.2f}  (n={s["n"]}, in %)')
  return {'seeds': seeds, **summary}
