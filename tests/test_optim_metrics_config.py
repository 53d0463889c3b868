"""Optimizer semantics, schedules, evaluation metrics and config handling."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import config as config_lib
from kdjax.config import import_module
recipes = import_module('common')  # configs/common.py: the shared recipes
from kdjax.train import metrics, optim


def _optim(**kw):
  c = config_lib.base_config().optim
  c = config_lib.ConfigDict(c.to_dict())
  for k, v in kw.items():
    c[k] = v
  return c


def test_piecewise_schedule_boundaries():
  o = _optim(lr=0.05, boundaries_epochs=(2, 3), decay_factor=0.1)
  s = optim.learning_rate(o, steps_per_epoch=10, epochs=4)
  np.testing.assert_allclose([s(0), s(19), s(20), s(29), s(30), s(39)],
                             [0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005], rtol=1e-6)


def test_warmup_then_cosine():
  o = _optim(lr=0.1, schedule='cosine', warmup_epochs=1.0)
  s = optim.learning_rate(o, steps_per_epoch=10, epochs=11)
  np.testing.assert_allclose(s(0), 0.01, rtol=1e-6)        # lr / warmup_steps
  np.testing.assert_allclose(s(9), 0.1, rtol=1e-6)         # end of warm-up
  np.testing.assert_allclose(s(10), 0.1, rtol=1e-6)        # cosine starts at lr
  np.testing.assert_allclose(s(60), 0.05, rtol=1e-6)       # half way: lr/2
  assert float(s(110)) < 1e-8


def test_linear_batch_scaling():
  o = _optim(lr=0.1, batch_size=512, base_batch_size=256, schedule='constant')
  np.testing.assert_allclose(optim.learning_rate(o, 10, 1)(0), 0.2, rtol=1e-6)


def test_sgd_matches_pytorch_update_rule():
  """Two steps of coupled-decay Nesterov SGD, computed by hand as torch.optim.SGD does."""
  lr, mu, wd = 0.1, 0.9, 0.01
  o = _optim(lr=lr, momentum=mu, nesterov=True, weight_decay=wd, schedule='constant')
  params = {'student': {'w': jnp.array([1.0, -2.0])}, 'aux': {}}
  tx = optim.make_tx(o, optim.learning_rate(o, 1, 1), params)
  state = tx.init(params)
  grads = [jnp.array([0.5, 0.25]), jnp.array([-1.0, 2.0])]
  p, buf = np.array([1.0, -2.0]), np.zeros(2)
  for g in grads:
    upd, state = tx.update({'student': {'w': g}, 'aux': {}}, state, params)
    params = jax.tree.map(lambda a, b: a + b, params, upd)
    d = np.asarray(g) + wd * p
    buf = mu * buf + d
    p = p - lr * (d + mu * buf)
  np.testing.assert_allclose(params['student']['w'], p, rtol=1e-6)


def test_trainable_regex_freezes_and_skips_decay():
  o = _optim(lr=0.1, weight_decay=0.5, schedule='constant')
  params = {'student': {'a': jnp.ones(2)}, 'aux': {'fitnet': {'b': jnp.ones(2)}}}
  tx = optim.make_tx(o, optim.learning_rate(o, 1, 1), params, trainable=['^aux/'])
  upd, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  np.testing.assert_array_equal(upd['student']['a'], 0.0)
  np.testing.assert_allclose(upd['aux']['fitnet']['b'], -0.1 * 1.5)
  with pytest.raises(ValueError, match='matches no parameter'):
    optim.make_tx(o, optim.learning_rate(o, 1, 1), params, trainable=['^nothing/'])


def test_no_decay_prefix():
  o = _optim(lr=1.0, weight_decay=0.5, momentum=0.0, schedule='constant')
  params = {'student': {'a': jnp.ones(1)}, 'aux': {'crd': {'b': jnp.ones(1)}}}
  tx = optim.make_tx(o, optim.learning_rate(o, 1, 1), params, no_decay_prefixes=['aux/crd/'])
  upd, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(upd['student']['a'], -0.5)
  np.testing.assert_allclose(upd['aux']['crd']['b'], 0.0)


def test_ece_hand_computed():
  # Confidences 0.9 (correct), 0.9 (wrong), 0.6 (correct): two occupied bins.
  probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4]])
  labels = np.array([0, 1, 0])
  ece = metrics.expected_calibration_error(np.log(probs), labels, num_bins=15)
  expected = 2 / 3 * abs(0.5 - 0.9) + 1 / 3 * abs(1.0 - 0.6)
  np.testing.assert_allclose(ece, expected, rtol=1e-6)


def test_aurc_hand_computed():
  # Sorted by confidence: wrong, right, right -> risks 1, 1/2, 1/3.
  probs = np.array([[0.95, 0.05], [0.2, 0.8], [0.6, 0.4]])
  labels = np.array([1, 1, 0])
  np.testing.assert_allclose(metrics.aurc(np.log(probs), labels), (1 + 0.5 + 1 / 3) / 3, rtol=1e-6)


def test_topk_and_agreement():
  logits = np.array([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
  assert metrics.topk_accuracy(logits, np.array([1, 0]), 1) == 0.0
  assert metrics.topk_accuracy(logits, np.array([1, 0]), 5) == 0.5
  agree = metrics.agreement_metrics(logits, logits)
  assert agree['teacher_agreement'] == 1.0 and abs(agree['teacher_kl']) < 1e-12


def test_unknown_override_key_lists_valid_keys():
  cfg = recipes.digits('resnet8')
  with pytest.raises(KeyError, match=r"unknown config key 'optim.lr_rate'.*Did you mean optim.lr"):
    config_lib.apply_overrides(cfg, ['optim.lr_rate=0.1'])
  config_lib.apply_overrides(cfg, ['optim.lr=0.2', 'optim.boundaries_epochs=[1,2]', 'data.flip=true',
                                   'distill.terms.kd.weight=0.5'])
  assert cfg.optim.lr == 0.2 and cfg.optim.boundaries_epochs == (1, 2) and cfg.data.flip is True
  assert cfg.distill.terms.kd.weight == 0.5


def test_config_json_round_trip(tmp_path):
  cfg = recipes.student('digits', 'resnet20', 'resnet8', recipes.kd_terms(), ce_weight=0.1)
  p = tmp_path / 'config.json'
  p.write_text(config_lib.to_json(cfg))
  back = config_lib.from_json(str(p))
  assert json.loads(config_lib.to_json(back)) == json.loads(config_lib.to_json(cfg))
  assert config_lib.config_hash(back) == config_lib.config_hash(cfg)
