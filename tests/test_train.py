"""End-to-end training on the embedded digits set: teacher, KD, resume, failures."""

import json
import os
import shutil
import time

import jax
import numpy as np
import pytest

from kdjax.config import import_module
recipes = import_module('common')  # configs/common.py: the shared recipes
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import loop, setup as setup_lib


def tiny(arch='resnet8', epochs=2, **over):
  cfg = recipes.digits(arch)
  cfg.epochs = epochs
  cfg.eval_every_epochs = 1
  cfg.checkpoint_every_epochs = 1
  cfg.progress_bar = False
  cfg.optim.warmup_epochs = 0.0
  return _override(cfg, over)


def _override(cfg, over):
  for k, v in over.items():
    node = cfg
    *path, leaf = k.split('.')
    for p in path:
      node = node[p]
    node[leaf] = v
  return cfg


def kd_cfg(teacher_dir, **over):
  cfg = recipes.student('digits', 'resnet8', 'resnet8', recipes.kd_terms(), ce_weight=0.1)
  cfg.teacher.checkpoint = teacher_dir
  cfg.epochs = 1
  cfg.progress_bar = False
  cfg.eval_every_epochs = 1
  cfg.checkpoint_every_epochs = 1
  cfg.optim.warmup_epochs = 0.0
  return _override(cfg, over)


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('teacher'))
  loop.train_and_evaluate(tiny('resnet8', epochs=3, **{'optim.lr': 0.1}), d)
  return d


def test_teacher_run_writes_outputs_and_learns(teacher_dir):
  res = json.load(open(os.path.join(teacher_dir, 'results.json')))
  assert res['final']['top1'] > 0.5, res  # 10 classes: chance is 0.1
  for key in ('top1', 'top5', 'loss', 'ece', 'aurc'):
    assert key in res['final']
  assert {'best', 'seed', 'config_hash', 'wall_time_sec', 'train_images_per_sec'} <= set(res)
  assert res['best']['top1'] >= res['final']['top1']
  lines = [json.loads(l) for l in open(os.path.join(teacher_dir, 'metrics.jsonl'))]
  assert [l['epoch'] for l in lines if l['kind'] == 'eval'] == [1.0, 2.0, 3.0]
  assert os.path.exists(os.path.join(teacher_dir, 'config.json'))
  assert os.listdir(os.path.join(teacher_dir, 'tensorboard'))


@pytest.mark.slow
def test_kd_run_reports_teacher_agreement(teacher_dir, tmp_path):
  res = loop.train_and_evaluate(kd_cfg(teacher_dir), str(tmp_path))
  assert 'teacher_agreement' in res['final'] and 'teacher_kl' in res['final']
  assert res['teacher_checkpoint_hash'] and res['methods'] == ['kd']
  assert np.isfinite(res['final']['loss'])


def test_teacher_is_never_updated(teacher_dir, tmp_path):
  """The teacher is an input of the step, not part of the state: its hash is stable."""
  cfg = kd_cfg(teacher_dir)
  s = setup_lib.build(cfg)
  before = s.teacher.hash
  loop.train_and_evaluate(cfg, str(tmp_path))
  assert setup_lib.build(cfg).teacher.hash == before


def _final_params(workdir, cfg):
  s = setup_lib.build(cfg)
  v = setup_lib.init_variables(s)
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  step, state = loop.restore(s, ck, v)
  ck.close()
  return step, state


@pytest.mark.slow
def test_stopped_and_resumed_run_matches_uninterrupted(teacher_dir, tmp_path):
  """Exact resume: stop mid-epoch, restart, compare params and metrics bit for bit."""
  cfg = kd_cfg(teacher_dir, epochs=2)
  full = loop.train_and_evaluate(cfg, str(tmp_path / 'full'))
  part = loop.train_and_evaluate(cfg, str(tmp_path / 'part'), stop_after_steps=30)
  assert part == {'interrupted': True, 'step': 30}
  resumed = loop.train_and_evaluate(cfg, str(tmp_path / 'part'))
  assert resumed['final'] == full['final']
  assert resumed['best'] == full['best']
  _, a = _final_params(str(tmp_path / 'full'), cfg)
  _, b = _final_params(str(tmp_path / 'part'), cfg)
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back(teacher_dir, tmp_path, capsys):
  cfg = kd_cfg(teacher_dir, epochs=2)
  wd = str(tmp_path)
  loop.train_and_evaluate(cfg, wd, stop_after_steps=30)
  steps = ckpt_lib.Checkpointer(os.path.join(wd, 'checkpoints')).steps()
  assert steps[-1] == 30 and 22 in steps
  # Truncate every file of the newest checkpoint.
  for root, _, files in os.walk(os.path.join(wd, 'checkpoints', '30')):
    for f in files:
      open(os.path.join(root, f), 'w').close()
  res = loop.train_and_evaluate(cfg, wd)
  assert 'unreadable' in capsys.readouterr().out
  assert np.isfinite(res['final']['top1'])
  # Moved aside for inspection (never deleted), so the step can be saved again.
  assert not os.path.exists(os.path.join(wd, 'checkpoints', '30'))
  assert [b.split('.')[0] for b in os.listdir(os.path.join(wd, 'broken_checkpoints'))] == ['30']


def test_non_finite_loss_stops_with_step_and_terms(teacher_dir, tmp_path):
  cfg = kd_cfg(teacher_dir, **{'optim.lr': 1e30})
  with pytest.raises(loop.NonFiniteLossError, match=r'non-finite loss at step \d+: .*loss/kd'):
    loop.train_and_evaluate(cfg, str(tmp_path))


def test_bad_method_fails_before_compiling(teacher_dir, tmp_path):
  cfg = kd_cfg(teacher_dir)
  with cfg.distill.unlocked():
    cfg.distill.terms.kd.method = 'kdd'
  t0 = time.time()
  with pytest.raises(ValueError, match="unknown distillation method 'kdd'.*did you mean 'kd'"):
    loop.train_and_evaluate(cfg, str(tmp_path))
  assert time.time() - t0 < 20


def test_missing_teacher_says_how_to_train_one(tmp_path):
  cfg = kd_cfg(str(tmp_path / 'nothing'))
  with pytest.raises(FileNotFoundError, match='Train a teacher first'):
    setup_lib.build(cfg)


def test_eval_workdir_matches_final_metrics(teacher_dir):
  res = loop.evaluate_workdir(teacher_dir)
  final = json.load(open(os.path.join(teacher_dir, 'results.json')))['final']
  assert res['top1'] == final['top1'] and res['ece'] == pytest.approx(final['ece'])


@pytest.mark.parametrize('dataset,arch,image_size', [
    ('cifar10', 'resnet8', 32), pytest.param('imagenet2012', 'resnet18', 32, marks=pytest.mark.slow)])
def test_tfds_paths_train_on_mock_data(tmp_path, dataset, arch, image_size):
  """The real CIFAR (in-memory) and ImageNet (grain stream) paths, on TFDS mock data."""
  import tensorflow_datasets as tfds
  cfg = recipes.teacher(dataset, arch)
  cfg.data.data_dir = str(tmp_path / 'tfds')
  cfg.data.image_size = image_size
  cfg.epochs = 1
  cfg.optim.batch_size = 8
  cfg.eval_batch_size = 8
  cfg.progress_bar = False
  from tfds_helpers import prepare_metadata
  splits = {'cifar10': [('train', 50000), ('test', 10000)],
            'imagenet2012': [('train', 1281167), ('validation', 50000)]}[dataset]
  prepare_metadata(tmp_path / 'tfds', dataset, splits)
  with tfds.testing.mock_data(num_examples=16, data_dir=str(tmp_path / 'tfds')):
    res = loop.train_and_evaluate(cfg, str(tmp_path / 'run'))
  assert np.isfinite(res['final']['loss'])
  lines = [json.loads(l) for l in open(tmp_path / 'run' / 'metrics.jsonl')]
  assert [l['step'] for l in lines if l['kind'] == 'eval'] == [2]


def test_hyperparameter_typo_is_reported_before_loading_anything(tmp_path):
  cfg = kd_cfg(str(tmp_path / 'no_teacher_here'))
  with cfg.distill.unlocked():
    cfg.distill.terms.kd.temprature = 3.0
  with pytest.raises(ValueError, match="no hyper-parameter 'temprature'.*did you mean 'temperature'"):
    setup_lib.build(cfg)
