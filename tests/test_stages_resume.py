"""Multi-stage and multi-network runs through the real loop: what each stage
trains, and exact resume across a stage boundary and for a DML cohort."""

import os

import jax
import numpy as np
import pytest

from kdjax.config import import_module
recipes = import_module('common')  # configs/common.py: the shared recipes
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import loop, setup as setup_lib

SPE = 22  # digits: 1437 // 64 steps per epoch


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('teacher'))
  cfg = recipes.digits('resnet8')
  cfg.epochs = 1
  cfg.progress_bar = False
  loop.train_and_evaluate(cfg, d)
  return d


def fitnet_two_stage(teacher_dir):
  """Seed 002's FitNet: a hint stage training the student up to stage2 plus
  the regressor, then Hinton KD."""
  cfg = recipes.student('digits', 'resnet8', 'resnet8', {}, ce_weight=0.1)
  cfg.teacher.checkpoint = teacher_dir
  cfg.progress_bar = False
  cfg.checkpoint_every_epochs = 1
  cfg.optim.warmup_epochs = 0.0
  with cfg.unlocked():
    cfg.stages = (
        dict(name='hint', epochs=1, trainable=(r'^student/(conv1|bn1|layer1_|layer2_)', '^aux/fitnet/'),
             optim=dict(lr=0.01, schedule='constant'),
             distill=dict(ce_weight=0.0, terms={'fitnet': dict(method='fitnet', weight=1.0)})),
        dict(name='main', epochs=1,
             distill=dict(ce_weight=0.1, terms={'kd': dict(method='kd', weight=0.9)})),
    )
  return cfg


def _restore(workdir, cfg):
  """The newest checkpoint of a workdir as (step, state)."""
  s = setup_lib.build(cfg)
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=10)
  restored = loop.restore(s, ck, setup_lib.init_variables(s))
  ck.close()
  return restored


@pytest.mark.slow
def test_init_stage_trains_only_the_declared_parameters(teacher_dir, tmp_path):
  cfg = fitnet_two_stage(teacher_dir)
  wd = str(tmp_path)
  res = loop.train_and_evaluate(cfg, wd, stop_after_steps=SPE)  # exactly the stage boundary
  assert res == {'interrupted': True, 'step': SPE}
  s = setup_lib.build(cfg)
  init = setup_lib.init_variables(s)
  step, state = _restore(wd, cfg)
  assert step == SPE
  p0, p1 = init['params'], jax.device_get(state['params'])
  changed = lambda a, b: not np.array_equal(np.asarray(a), np.asarray(b))
  assert changed(p0['student']['layer2_0']['conv1']['kernel'], p1['student']['layer2_0']['conv1']['kernel'])
  assert all(changed(a, b) for a, b in zip(jax.tree.leaves(p0['aux']['fitnet']),
                                           jax.tree.leaves(p1['aux']['fitnet'])))
  for frozen in ('layer3_0', 'head'):
    jax.tree.map(np.testing.assert_array_equal, p0['student'][frozen], p1['student'][frozen])


@pytest.fixture(scope='module')
def uninterrupted(teacher_dir, tmp_path_factory):
  cfg = fitnet_two_stage(teacher_dir)
  wd = str(tmp_path_factory.mktemp('full'))
  return loop.train_and_evaluate(cfg, wd), _restore(wd, cfg)[1]


@pytest.mark.parametrize('stop_at', [pytest.param(SPE // 2, marks=pytest.mark.slow),
                                     pytest.param(SPE, marks=pytest.mark.slow),
                                     pytest.param(SPE + 5, marks=pytest.mark.slow)])
def test_two_stage_run_resumes_exactly(teacher_dir, uninterrupted, tmp_path, stop_at):
  """Stopped inside stage 1, at the boundary, or inside stage 2: same final state."""
  cfg = fitnet_two_stage(teacher_dir)
  full, a = uninterrupted
  loop.train_and_evaluate(cfg, str(tmp_path), stop_after_steps=stop_at)
  resumed = loop.train_and_evaluate(cfg, str(tmp_path))
  assert resumed['final'] == full['final']
  _, b = _restore(str(tmp_path), cfg)
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.slow
def test_dml_cohort_resumes_exactly(tmp_path):
  cfg = recipes.digits('resnet8')
  cfg.model.cohort = ('resnet8', 'resnet8')
  cfg.epochs = 1
  cfg.progress_bar = False
  cfg.optim.warmup_epochs = 0.0
  cfg.distill.ce_weight = 0.0
  with cfg.distill.unlocked():
    cfg.distill.terms = {'dml': dict(method='dml')}
  full = loop.train_and_evaluate(cfg, str(tmp_path / 'full'))
  loop.train_and_evaluate(cfg, str(tmp_path / 'part'), stop_after_steps=9)
  resumed = loop.train_and_evaluate(cfg, str(tmp_path / 'part'))
  assert resumed['final'] == full['final']
  assert {'member0/top1', 'member1/top1', 'ensemble/top1'} <= set(full['final'])
  _, a = _restore(str(tmp_path / 'full'), cfg)
  _, b = _restore(str(tmp_path / 'part'), cfg)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_export_drops_auxiliary_modules(teacher_dir, tmp_path):
  """The exported student holds the student's variables only (no regressor, no optimizer)."""
  from flax import serialization
  cfg = fitnet_two_stage(teacher_dir)
  wd = str(tmp_path / 'run')
  loop.train_and_evaluate(cfg, wd, stop_after_steps=3)
  out = str(tmp_path / 'student.msgpack')
  meta = loop.export_student(wd, out)
  assert meta['model'] == 'resnet8' and meta['step'] == 3
  blob = serialization.msgpack_restore(open(out, 'rb').read())
  assert set(blob) == {'params', 'batch_stats'}
  _, state = _restore(wd, cfg)
  assert 'fitnet' in state['params']['aux']
  jax.tree.map(np.testing.assert_array_equal, blob['params'], jax.device_get(state['params']['student']))
