"""Eval-mode BN folded into the preceding conv (kdjax.models.fold): same outputs, same variables."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import models, runtime
from kdjax.models import common, fold


def _random_stats(variables, seed=0):
  """Non-trivial BN statistics and affine parameters (init has mean 0, var 1, scale 1, bias 0)."""
  rng = np.random.default_rng(seed)

  def perturb(path, a):
    name = path[-1].key
    if name in ('mean', 'bias'):
      return a + jnp.asarray(rng.normal(0, 0.5, a.shape), jnp.float32)
    if name in ('var', 'scale'):  # positive, and negative scales too
      return a * jnp.asarray(rng.uniform(0.2, 3.0, a.shape), jnp.float32) * (
          1 if name == 'var' else jnp.asarray(rng.choice([-1, 1], a.shape), jnp.float32))
    return a
  return jax.tree_util.tree_map_with_path(perturb, variables)


def _variables(model, x, seed=0):
  """Random variables of `model` from numpy: model.init runs op by op and compiles threefry
  programs (seconds for a ResNet on 2 cores), and any weights serve these equalities."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    if path[-1].key == 'kernel':
      return jnp.asarray(rng.normal(0, np.sqrt(2 / np.prod(s.shape[:-1])), s.shape), s.dtype)
    return jnp.full(s.shape, 1.0 if path[-1].key in ('var', 'scale') else 0.0, s.dtype)
  return _random_stats(jax.tree_util.tree_map_with_path(fill, shapes), seed)


def _rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize('arch, folded, total', [pytest.param('resnet8', 9, 9, marks=pytest.mark.slow),
                                                ('wrn_16_1', 6, 13)])
def test_folded_forward_equals_plain(arch, folded, total):
  # resnet8: stem + 3 blocks x 2 + 2 projection shortcuts = 9 conv -> BN pairs, all folded.
  # wrn_16_1 is pre-activation: only the BN between each block's two convs follows a conv
  # (6 blocks); the other 7 BNs read a block input or the last map and stay as they are.
  m = models.create(arch, 10)
  x = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (4, 8, 8, 3)), jnp.float32)
  v = _variables(m, x)
  pairs = fold.conv_bn_pairs(m, v, x, train=False)
  n_bn = sum(1 for p, _ in jax.tree_util.tree_leaves_with_path(v['batch_stats']) if p[-1].key == 'mean')
  assert (len(pairs), n_bn) == (folded, total)
  assert all(eps == 1e-5 for _, eps in pairs.values())
  f = fold.BatchNormFolded(m)
  logits, feats = m.apply(v, x, train=False)
  logits2, feats2 = jax.jit(lambda v, x: f.apply(v, x, train=False))(v, x)
  assert set(feats2) == set(feats)
  for k in feats:  # stage*_preact included
    assert _rel_err(feats2[k], feats[k]) < 1e-5, k
  assert _rel_err(logits2, logits) < 1e-5
  # Gradients with respect to the input (BSS attacks the teacher) agree as well.
  # Jitted: op by op, the gradients compile hundreds of small programs.
  g = jax.jit(jax.grad(lambda x: m.apply(v, x, train=False)[0][:, 0].sum()))(x)
  g2 = jax.jit(jax.grad(lambda x: f.apply(v, x, train=False)[0][:, 0].sum()))(x)
  assert _rel_err(g2, g) < 1e-5


def test_train_mode_and_attributes_pass_through():
  m = models.create('resnet8', 10)
  x = jnp.asarray(np.random.default_rng(2).normal(0, 1, (4, 8, 8, 3)), jnp.float32)
  v = _variables(m, x, seed=2)
  f = fold.BatchNormFolded(m)
  (lo, _), st = m.apply(v, x, train=True, mutable=['batch_stats'])
  (lo2, _), st2 = f.apply(v, x, train=True, mutable=['batch_stats'])
  np.testing.assert_array_equal(np.asarray(lo2), np.asarray(lo))  # same code path: bit-equal
  jax.tree.map(np.testing.assert_array_equal, st2, st)
  assert f.spec() == m.spec() and f.num_classes == 10 and f.unwrapped is m


class _ConvFeature(nn.Module):
  """A conv whose pre-BN output is also a returned feature: folding it would change that feature."""

  @nn.compact
  def __call__(self, x, train=False):
    y = common.conv(4, 3, name='conv_a')(x)
    z = common.batch_norm(train, 'bn_a')(y)
    w = common.batch_norm(train, 'bn_b')(common.conv(4, 3, name='conv_b')(z))
    return w.mean((1, 2)), {'pre_bn': y, 'out': w}


def test_conv_output_used_elsewhere_is_not_folded():
  m = _ConvFeature()
  x = jnp.asarray(np.random.default_rng(3).normal(0, 1, (2, 6, 6, 3)), jnp.float32)
  v = _variables(m, x, seed=3)
  assert fold.conv_bn_pairs(m, v, x, train=False) == {('conv_b',): (('bn_b',), 1e-5)}
  _, feats = m.apply(v, x, train=False)
  _, feats2 = fold.BatchNormFolded(m).apply(v, x, train=False)
  np.testing.assert_array_equal(np.asarray(feats2['pre_bn']), np.asarray(feats['pre_bn']))
  assert _rel_err(feats2['out'], feats['out']) < 1e-5


def test_fold_switch(monkeypatch):
  monkeypatch.delenv('KDJAX_CPU_FOLD_TEACHER_BN', raising=False)
  assert not runtime.fold_teacher_bn()  # off by default (no measured gain)
  monkeypatch.setenv('KDJAX_CPU_FOLD_TEACHER_BN', '1')
  assert runtime.fold_teacher_bn() == (jax.default_backend() == 'cpu')
