"""SRRL at earlier layers (SRRL Table 1, last rows): forward_from, AdaIN, the multi-layer term."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import models
from kdjax.distill import api
from kdjax.distill.methods import srrl as srrl_lib

HW = 8


@functools.lru_cache(maxsize=None)
def _model(name):
  m = models.create(name, 10)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, HW, HW, 3)), jnp.float32)
  return m, m.init(jax.random.key(1), x, train=False), x


@pytest.mark.parametrize('name', ['wrn_10_1', 'resnet8'])
def test_forward_from_matches_full_forward(name):
  m, v, x = _model(name)
  logits, feats = m.apply(v, x, train=False)
  for k in (1, 2, 3):  # 3: only the final BN-ReLU (WRN) / pooling and head remain
    out = m.apply(v, feats[f'stage{k}'], k, train=False, method='forward_from')
    np.testing.assert_allclose(out, logits, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='stage'):
    m.apply(v, feats['stage1'], 0, method='forward_from')


def test_adain_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  y = (3.0 * rng.normal(size=(2, 2, 2, 5)) + 1.0).astype(np.float32)
  want = np.empty_like(x)
  for n in range(2):
    for c in range(5):
      a, b = x[n, :, :, c], y[n, :, :, c]
      want[n, :, :, c] = (np.sqrt(b.var() + 1e-5) * (a - a.mean()) / np.sqrt(a.var() + 1e-5)
                          + b.mean())
  got = np.asarray(srrl_lib.adain(x, y))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The output carries y's per-channel mean and (up to eps) std.
  np.testing.assert_allclose(got.mean((1, 2)), y.mean((1, 2)), atol=1e-5)
  np.testing.assert_allclose(got.std((1, 2)), y.std((1, 2)), rtol=1e-3)


@functools.lru_cache(maxsize=None)
def _setup():
  from kdjax.train.setup import feature_shapes

  class _DS:
    image_shape = (HW, HW, 3)
  (s, sv, x), (t, tv, _) = _model('resnet8'), _model('wrn_10_1')
  info = api.BuildInfo(student_shapes=feature_shapes(s, sv, _DS),
                       teacher_shapes=feature_shapes(t, tv, _DS), num_classes=10, num_train=20,
                       student_spec=s.spec(), teacher_spec=t.spec())
  (sl, sf), _ = s.apply(sv, x, train=True, mutable=['batch_stats'])
  tl, tf = t.apply(tv, x, train=False)
  ctx = api.Context(student={**sf, 'logits': sl},
                    teacher=jax.lax.stop_gradient({**tf, 'logits': tl}),
                    labels=jnp.asarray([1, 2]), index=jnp.asarray([0, 1]), images=x,
                    rng=jax.random.key(0), progress=jnp.float32(1.0), stage_epochs=4.0,
                    train=True, num_classes=10, teacher_variables=tv)
  return info, ctx


def _term(**kw):
  info, _ = _setup()
  (term,) = api.build_term(dict(method='srrl', **kw), info)
  aux = term.init(jax.random.key(3), api.example_context(info))
  return term, {'params': {}, **aux}


def test_multi_layer_term_jit_finite_and_teacher_frozen():
  _, ctx = _setup()
  term, aux = _term(layers=('stage1', 'stage2', 'last'))
  assert sorted(aux['params']) == ['last', 'stage1', 'stage2']

  def f(aux_params, teacher_vars):
    c = dataclasses.replace(ctx, teacher_variables=teacher_vars)
    loss, metrics, _ = term.loss({**aux, 'params': aux_params}, c)
    return loss, metrics
  (loss, metrics), (g_aux, g_t) = jax.jit(
      jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(aux['params'], ctx.teacher_variables)
  assert np.isfinite(float(loss))
  for layer in ('stage1', 'stage2', 'last'):
    assert np.isfinite(float(metrics[f'sr_{layer}'])) and float(metrics[f'sr_{layer}']) > 0
    assert float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(g_aux[layer]))) > 0
  np.testing.assert_allclose(loss, metrics['fm'] + metrics['sr'], rtol=1e-5)
  for g in jax.tree.leaves(g_t):
    np.testing.assert_array_equal(g, 0.0)


def test_last_only_equals_existing_term():
  _, ctx = _setup()
  old, aux_old = _term()
  new, aux_new = _term(layers=('last',))
  jax.tree.map(np.testing.assert_array_equal, aux_old, aux_new)  # same (flat) variables
  np.testing.assert_allclose(new.loss(aux_new, ctx)[0], old.loss(aux_old, ctx)[0], rtol=1e-6)


def test_spatial_mismatch_and_bad_names_fail_at_build_time():
  info, _ = _setup()
  # Student stage1 (8x8) against a teacher stage1 resized to 4x4.
  shapes = dict(info.teacher_shapes)
  s1 = shapes['stage1']
  shapes['stage1'] = jax.ShapeDtypeStruct((s1.shape[0], 4, 4, s1.shape[3]), s1.dtype)
  bad = dataclasses.replace(info, teacher_shapes=shapes)
  with pytest.raises(ValueError, match='H, W'):
    api.build_term(dict(method='srrl', layers=('stage1',)), bad)
  with pytest.raises(ValueError, match='unknown layer'):
    api.build_term(dict(method='srrl', layers=('conv2',)), info)
  with pytest.raises(ValueError, match='teacher_spec'):
    api.build_term(dict(method='srrl', layers=('stage2',)),
                   dataclasses.replace(info, teacher_spec=None))
