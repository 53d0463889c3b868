"""`kdjax quickstart`: the embedded end-to-end demo on sklearn's digits (no network).

Trains a resnet20 teacher, a resnet8 baseline and a resnet8 KD student from the
files in `configs/digits/`, then prints the three accuracies. Each run resumes
if its workdir already holds checkpoints.
"""

from __future__ import annotations

import os

from kdjax import config as config_lib
from kdjax.train import train_and_evaluate

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'digits')


def _config(name: str, overrides):
  path = os.path.join(CONFIGS, name)
  if not os.path.exists(path):
    path = os.path.join('configs', 'digits', name)
  cfg = config_lib.load_file(path)
  return config_lib.apply_overrides(cfg, overrides)


def run(workdir: str, overrides=()) -> dict:
  runs = {}
  teacher_dir = os.path.join(workdir, 'teacher_resnet20')
  print('[1/3] teacher resnet20 on digits', flush=True)
  runs['teacher resnet20'] = train_and_evaluate(_config('teacher_resnet20.py', overrides), teacher_dir)
  print('[2/3] student resnet8 from scratch', flush=True)
  runs['student resnet8 (baseline)'] = train_and_evaluate(
      _config('teacher_resnet8.py', overrides), os.path.join(workdir, 'baseline_resnet8'))
  print('[3/3] student resnet8 distilled with KD', flush=True)
  cfg = _config('kd_resnet20_resnet8.py', list(overrides) + [f'teacher.checkpoint={teacher_dir}'])
  runs['student resnet8 + KD'] = train_and_evaluate(cfg, os.path.join(workdir, 'kd_resnet20_resnet8'))
  print('\nDigits test accuracy (360 images, last epoch / best epoch):')
  for name, r in runs.items():
    extra = ''
    if 'teacher_agreement' in r['final']:
      extra = f'   agreement with teacher {r["final"]["teacher_agreement"]:.4f}'
    print(f'  {name:28s} top-1 {r["final"]["top1"]:.4f} / {r["best"]["top1"]:.4f}   '
          f'ECE {r["final"]["ece"]:.4f}{extra}')
  print(f'Workdirs, metrics and results.json under {os.path.abspath(workdir)}')
  return runs
