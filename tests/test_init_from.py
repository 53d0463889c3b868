"""`model.init_from=WORKDIR`: a run starts from another run's student (digits, resnet8)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import config as config_lib
from kdjax import models
from kdjax.config import import_module
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train import setup as setup_lib

recipes = import_module('common')  # configs/common.py: the shared recipes


def _cfg(arch='resnet8', **model):
  cfg = recipes.digits(arch)
  cfg.progress_bar = False
  for k, v in model.items():
    cfg.model[k] = v
  return cfg


def _source_run(workdir, arch='resnet8', num_classes=10, step=7, shift=0.25, cfg_arch=None):
  """A finished-looking workdir: config.json and one checkpoint of a student whose
  parameters are a seeded init plus `shift` (so they differ from any fresh init)."""
  os.makedirs(workdir, exist_ok=True)
  cfg = _cfg(cfg_arch or arch)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config_lib.to_json(cfg))
  model = models.create(arch, num_classes)
  v = model.init(jax.random.key(123), jnp.zeros((2, 8, 8, 1)), train=False)
  params = jax.tree.map(lambda x: x + shift, v['params'])
  stats = jax.tree.map(lambda x: x + 2 * shift, v['batch_stats'])
  state = {'step': jnp.asarray(step, jnp.int32), 'params': {'student': params, 'aux': {}},
           'batch_stats': stats, 'aux_state': {}}
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), asynchronous=False)
  ck.save(step, state)
  ck.close()
  return {'params': params, 'batch_stats': stats}


def _leaves(tree):
  return [(k, np.asarray(x)) for k, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def test_run_initialised_from_another_starts_with_its_parameters(tmp_path):
  src = _source_run(str(tmp_path / 'src'))
  setup = setup_lib.build(_cfg(init_from=str(tmp_path / 'src')))
  assert setup.init_from.step == 7 and not setup.init_from.reinit_head
  assert setup.init_from.hash == ckpt_lib.tree_hash(src)
  v = setup_lib.init_variables(setup)
  got = _leaves({'params': v['params']['student'], 'batch_stats': v['batch_stats']})
  want = _leaves(src)
  assert [k for k, _ in got] == [k for k, _ in want]
  for (k, a), (_, b) in zip(got, want):
    np.testing.assert_array_equal(a, b, err_msg=str(k))
  # Without init_from the same config starts elsewhere (the test would otherwise be vacuous).
  fresh = setup_lib.init_variables(setup_lib.build(_cfg()))
  assert not np.array_equal(np.asarray(fresh['params']['student']['head']['kernel']),
                            np.asarray(src['params']['head']['kernel']))


def test_other_class_count_reinitialises_only_the_head(tmp_path):
  src = _source_run(str(tmp_path / 'src'), num_classes=5)
  setup = setup_lib.build(_cfg(init_from=str(tmp_path / 'src')))
  assert setup.init_from.reinit_head
  v = setup_lib.init_variables(setup)
  fresh = setup_lib.init_variables(setup_lib.build(_cfg()))
  s = v['params']['student']
  assert s['head']['kernel'].shape[-1] == 10
  np.testing.assert_array_equal(np.asarray(s['head']['kernel']),
                                np.asarray(fresh['params']['student']['head']['kernel']))
  np.testing.assert_array_equal(np.asarray(s['conv1']['kernel']), np.asarray(src['params']['conv1']['kernel']))
  np.testing.assert_array_equal(np.asarray(v['batch_stats']['bn1']['mean']),
                                np.asarray(src['batch_stats']['bn1']['mean']))


def test_architecture_mismatch_errors_before_compile(tmp_path):
  _source_run(str(tmp_path / 'src'))
  with pytest.raises(ValueError, match=r"model.name='resnet8'.*model.name='resnet14'"):
    setup_lib.build(_cfg('resnet14', init_from=str(tmp_path / 'src')))
  # A checkpoint whose shapes do not fit the named architecture: the first bad path is named.
  _source_run(str(tmp_path / 'odd'), arch='resnet14', cfg_arch='resnet8')
  with pytest.raises(ValueError, match=r'first mismatch: batch_stats/layer1_1/bn1/mean '
                     r'\(shape \(16,\) in the source run; absent here\)'):
    setup_lib.build(_cfg(init_from=str(tmp_path / 'odd')))
  with pytest.raises(FileNotFoundError, match='not a kdjax workdir'):
    setup_lib.build(_cfg(init_from=str(tmp_path / 'nowhere')))


@pytest.mark.slow
def test_training_run_from_another_run_keeps_its_weights_at_tiny_lr(tmp_path):
  from kdjax.train import loop
  src_cfg = _cfg()
  src_cfg.epochs, src_cfg.eval_every_epochs, src_cfg.checkpoint_every_epochs = 1, 1, 1
  src_cfg.optim.warmup_epochs = 0.0
  loop.train_and_evaluate(src_cfg, str(tmp_path / 'src'))
  cfg = _cfg(init_from=str(tmp_path / 'src'))
  cfg.epochs, cfg.eval_every_epochs, cfg.checkpoint_every_epochs = 1, 1, 1
  cfg.optim.update(dict(lr=1e-30, weight_decay=0.0, warmup_epochs=0.0, schedule='constant'))
  loop.train_and_evaluate(cfg, str(tmp_path / 'dst'))
  _, a = ckpt_lib.restore_exported(str(tmp_path / 'src' / 'checkpoints'))
  _, b = ckpt_lib.restore_exported(str(tmp_path / 'dst' / 'checkpoints'))
  for (k, x), (_, y) in zip(_leaves(a['params']['student']), _leaves(b['params']['student'])):
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-25, err_msg=str(k))  # lr must be > 0
  import json
  res = json.load(open(tmp_path / 'dst' / 'results.json'))
  assert res['init_from']['workdir'] == str(tmp_path / 'src')
  assert res['init_from']['checkpoint_hash'] == setup_lib.build(cfg).init_from.hash
