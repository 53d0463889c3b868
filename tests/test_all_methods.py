"""Every registered method trains on digits to a finite loss through the real loop.

New methods are picked up automatically; methods that need a special setup
(a cohort, stochastic depth, a multi-branch model) say so in SPECIAL.
"""

import json
import os

import numpy as np
import pytest

from kdjax.config import import_module
recipes = import_module('common')  # configs/common.py: the shared recipes
from kdjax.distill import registered_methods
from kdjax.train import loop

# method -> config overrides (dotted keys) beyond the default teacher resnet8 -> student resnet8.
SPECIAL = {
    'dml': {'model.cohort': ('resnet8', 'resnet8'), 'distill.ce_weight': 0.0, 'teacher': None},
    'one': {'model.name': 'one_resnet8', 'distill.ce_weight': 0.0, 'teacher': None},
    'okddip': {'model.name': 'okddip_resnet8', 'distill.ce_weight': 1.0, 'teacher': None},
    'self_guidance': {'model.name': 'resnet14', 'distill.ce_weight': 0.0, 'teacher': None},
    'stochastic_depth': {'model.name': 'resnet14', 'teacher': None},
    'ie_dml': {'model.cohort': ('resnet8', 'resnet8'), 'distill.ce_weight': 0.0, 'teacher': None},
}
# Student/teacher pairs for methods that need matching channels or a different student.
PAIRS = {'fsp': ('resnet8', 'resnet8')}


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('teacher'))
  cfg = recipes.digits('resnet8')
  cfg.epochs = 1
  cfg.progress_bar = False
  loop.train_and_evaluate(cfg, d)
  return d


def _set(cfg, key, value):
  node = cfg
  *path, leaf = key.split('.')
  for p in path:
    node = node[p]
  with node.unlocked():
    node[leaf] = value


# The default suite trains one method of each kind (logits, memory banks, an online cohort);
# every other method's end-to-end digits run is marked slow (~10 s each on 2 cores, cold cache).
FAST = ('kd',)  # crd, dml: unit and masked-batch tests run by default; their runs are slow


@pytest.mark.parametrize('method', [m if m in FAST else pytest.param(m, marks=pytest.mark.slow)
                                    for m in sorted(registered_methods())])
def test_method_trains_on_digits(method, teacher_dir, tmp_path):
  special = dict(SPECIAL.get(method, {}))
  teacher, student = PAIRS.get(method, ('resnet8', 'resnet8'))
  cfg = recipes.student('digits', teacher, student, {method: {'method': method}})
  cfg.teacher.checkpoint = teacher_dir
  if special.pop('teacher', 'keep') is None:
    cfg.teacher.checkpoint = ''
    cfg.teacher.arch = ''
  for k, v in special.items():
    _set(cfg, k, v)
  cfg.epochs = 1
  cfg.progress_bar = False
  cfg.log_every_steps = 1
  res = loop.train_and_evaluate(cfg, str(tmp_path), stop_after_steps=None)
  records = [json.loads(l) for l in open(os.path.join(tmp_path, 'metrics.jsonl'))]
  train = [r for r in records if r['kind'] == 'train']
  assert train and all(np.isfinite(r['loss/total']) for r in train), train[-1]
  assert any(k.startswith('loss/') and k != 'loss/total' and k != 'loss/ce' for k in train[-1])
  assert np.isfinite(res['final']['loss'])
