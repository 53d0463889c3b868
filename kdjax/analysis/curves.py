"""Training curves from a run's `metrics.jsonl`.

Each line of metrics.jsonl is {'step', 'kind': 'train' | 'eval', ...}; eval
records carry 'epoch', 'top1', 'loss' on the test split, train records the
running 'loss/total', 'loss/ce' and 'train_accuracy' of the last logged step.
"""

from __future__ import annotations

import json
import os


def read(workdir: str) -> dict:
  """{'train': {'epoch', 'loss', 'error'}, 'test': {'epoch', 'loss', 'error'}} of one run."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{workdir} has no metrics.jsonl; is it a kdjax workdir?')
  with open(path) as f:
    recs = [json.loads(line) for line in f if line.strip()]
  evals = [r for r in recs if r.get('kind') == 'eval']
  # steps per epoch from any eval record (epoch = step / steps_per_epoch)
  spe = next((r['step'] / r['epoch'] for r in evals if r.get('epoch')), None)
  train = [r for r in recs if r.get('kind') == 'train']
  out = {'train': {'epoch': [], 'loss': [], 'error': []},
         'test': {'epoch': [r['epoch'] for r in evals], 'loss': [r.get('loss') for r in evals],
                  'error': [1.0 - r['top1'] for r in evals]}}
  for r in train:
    out['train']['epoch'].append(r['step'] / spe if spe else r['step'])
    out['train']['loss'].append(r.get('loss/ce', r.get('loss/total')))
    acc = r.get('train_accuracy')
    out['train']['error'].append(None if acc is None else 1.0 - acc)
  out['epoch_unit'] = 'epoch' if spe else 'step'
  return out
