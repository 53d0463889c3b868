"""KD with logit adjustment (the `kd` option) and IPWD's per-sample weighting of any term
(`ipwd.with_ipw`), against float64 numpy references written here."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import losses
from kdjax.distill import api
from kdjax.distill.methods import ipwd
from kdjax.distill.methods import kd as kd_lib

RTOL = 2e-5


def rand(seed, *shape, scale=1.0):
  return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def np_log_softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_kl_rows(z_s, z_t, tau):
  """tau^2 KL(p_t^tau || p_s^tau) per row, float64."""
  log_ps, log_pt = np_log_softmax(np.float64(z_s) / tau), np_log_softmax(np.float64(z_t) / tau)
  return tau ** 2 * np.sum(np.exp(log_pt) * (log_pt - log_ps), axis=1)


def logits_info(num_classes=10, batch=8, train_labels=None, pooled=None):
  sds = lambda *s: jax.ShapeDtypeStruct((batch,) + s, jnp.float32)
  student = {'logits': sds(num_classes)}
  if pooled:
    student['pooled'] = sds(pooled)
  return api.BuildInfo(student, {'logits': sds(num_classes)}, num_classes, 100,
                       train_labels=train_labels)


def make_ctx(s, t, labels=None, pooled=None, progress=0.0):
  student = {'logits': jnp.asarray(s)}
  if pooled is not None:
    student['pooled'] = jnp.asarray(pooled)
  return api.Context(student=student, teacher={'logits': jnp.asarray(t)},
                     labels=jnp.zeros((s.shape[0],), jnp.int32) if labels is None else labels,
                     rng=jax.random.key(0), progress=jnp.asarray(progress), stage_epochs=1.0,
                     train=True, num_classes=s.shape[1])


# ----------------------------------------------------------------------------
# KD + logit adjustment

def test_class_log_prior_hand_value_and_errors():
  got = kd_lib.class_log_prior(np.array([0, 0, 1, 2]), 3)
  np.testing.assert_allclose(got, np.log([0.5, 0.25, 0.25]), rtol=1e-6)
  with pytest.raises(ValueError, match='no training samples'):
    kd_lib.class_log_prior(np.array([0, 0, 1]), 3)
  with pytest.raises(ValueError, match=r'\[0, 3\)'):
    kd_lib.class_log_prior(np.array([0, 3]), 3)


def test_kd_la_reference_value_and_reductions():
  s, t = rand(0, 8, 4, scale=2.0), rand(1, 8, 4, scale=2.0)
  log_prior = np.log(np.array([0.4, 0.3, 0.2, 0.1]))
  got = kd_lib.kd_logit_adjusted(s, t, log_prior, temperature=4.0, logit_adjust_tau=1.5)
  ref = np.mean(np_kl_rows(np.float64(s) + 1.5 * log_prior, t, 4.0))
  np.testing.assert_allclose(float(got), ref, rtol=RTOL)
  # A uniform prior shifts every logit equally, and logit_adjust_tau = 0 removes it: plain KD.
  kd = float(losses.kd(jnp.asarray(s), jnp.asarray(t), temperature=4.0))
  uniform = np.full(4, np.log(0.25))
  np.testing.assert_allclose(float(kd_lib.kd_logit_adjusted(s, t, uniform)), kd, rtol=1e-5)
  np.testing.assert_allclose(
      float(kd_lib.kd_logit_adjusted(s, t, log_prior, logit_adjust_tau=0.0)), kd, rtol=1e-6)
  g_t = jax.grad(kd_lib.kd_logit_adjusted, argnums=1)(jnp.asarray(s), jnp.asarray(t), log_prior)
  assert np.all(np.asarray(g_t) == 0)


def test_kd_la_option_uses_training_labels_or_explicit_prior():
  labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
  s, t = rand(2, 8, 3), rand(3, 8, 3)
  term = kd_lib.build_kd(logits_info(3, train_labels=labels), logit_adjust_tau=1.0)
  ref = np.mean(np_kl_rows(np.float64(s) + np.log([0.6, 0.3, 0.1]), t, 4.0))
  np.testing.assert_allclose(float(term.loss({}, make_ctx(s, t))[0]), ref, rtol=RTOL)
  explicit = kd_lib.build_kd(logits_info(3), logit_adjust_tau=1.0, prior=[6, 3, 1])
  np.testing.assert_allclose(float(explicit.loss({}, make_ctx(s, t))[0]), ref, rtol=RTOL)
  # Without the option: plain KD, and the registered method is `kd` itself.
  plain = api.resolve_terms([dict(method='kd')], logits_info(3, train_labels=labels))[0]
  np.testing.assert_allclose(float(plain.loss({}, make_ctx(s, t))[0]),
                             np.mean(np_kl_rows(s, t, 4.0)), rtol=RTOL)
  with pytest.raises(ValueError, match='prior='):
    kd_lib.build_kd(logits_info(3), logit_adjust_tau=1.0)
  with pytest.raises(ValueError, match='positive'):
    kd_lib.build_kd(logits_info(3), logit_adjust_tau=1.0, prior=[1, 0, 1])
  with pytest.raises(ValueError, match='only used with logit_adjust_tau'):
    kd_lib.build_kd(logits_info(3), prior=[1, 1, 1])


def test_kd_per_sample_mean_is_the_loss():
  s, t = rand(4, 8, 10, scale=2.0), rand(5, 8, 10, scale=2.0)
  for tau in (0.0, 0.7):
    term = kd_lib.build_kd(logits_info(train_labels=np.arange(100) % 10 + 0),
                           logit_adjust_tau=tau, prior=list(range(1, 11)) if tau else None)
    ctx = make_ctx(s, t)
    per, _, _ = term.per_sample({}, ctx)
    shift = tau * np.log(np.arange(1, 11) / 55.0)
    np.testing.assert_allclose(np.asarray(per), np_kl_rows(np.float64(s) + shift, t, 4.0),
                               rtol=RTOL)
    np.testing.assert_allclose(float(term.loss({}, ctx)[0]), float(np.mean(per)), rtol=1e-6)


# ----------------------------------------------------------------------------
# IPWD weighting of any term with a per-sample loss

def test_with_ipw_is_the_weighted_mean_of_per_sample_losses_plus_head_ce():
  s, t, pooled = rand(6, 8, 5, scale=2.0), rand(7, 8, 5, scale=2.0), rand(8, 8, 6)
  labels = jnp.asarray([0, 1, 2, 3, 4, 0, 1, 2], jnp.int32)
  info = logits_info(5, pooled=6)
  inner = kd_lib.build_kd(info, weight=0.9)
  term = ipwd.with_ipw(inner, info, cls_weight=0.5, w_max=4.0)
  assert (term.name, term.method, term.weight) == ('kd', 'kd', 0.9)
  ctx = make_ctx(s, t, labels, pooled)
  aux = jax.jit(lambda key: term.init(key, api.example_context(info)))(jax.random.key(0))
  assert set(aux['params']) == {'ipw_head'}
  value, metrics, _ = jax.jit(lambda a: term.loss(a, ctx))(aux)
  # Float64 reference: head logits, propensity pi = sigmoid(log p_kd(y) - log p_cls(y)),
  # w = clip(1 / pi, 1, 4) / mean, and the per-sample KD.
  head = jax.tree.map(np.float64, aux['params']['ipw_head']['fc'])
  z_cls = np.float64(pooled) @ head['kernel'] + head['bias']
  y = np.asarray(labels)
  lp_kd = np_log_softmax(np.float64(s))[np.arange(8), y]
  lp_cls = np_log_softmax(z_cls)[np.arange(8), y]
  w = np.clip(1 + np.exp(lp_cls - lp_kd), 1.0, 4.0)
  w = w / w.mean()
  per = np_kl_rows(s, t, 4.0)
  ce = -np.mean(lp_cls)
  np.testing.assert_allclose(float(value), np.mean(w * per) + 0.5 * ce, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['ce_cls']), ce, rtol=1e-5)
  # Gradients: the head trains on CE only; stopped features; weights carry no gradient.
  grads = jax.grad(lambda a, p: term.loss(a, dataclasses.replace(
      ctx, student={'logits': ctx.student['logits'], 'pooled': p}))[0], argnums=(0, 1))(
          aux, jnp.asarray(pooled))
  assert np.abs(np.asarray(grads[0]['params']['ipw_head']['fc']['kernel'])).max() > 0
  assert np.all(np.asarray(grads[1]) == 0)
  # Before the warm-up ends every weight is 1.
  warm = ipwd.with_ipw(inner, info, cls_weight=0.0, warmup_epochs=2.0)
  v0 = float(warm.loss(aux, make_ctx(s, t, labels, pooled, progress=1.0))[0])
  np.testing.assert_allclose(v0, np.mean(per), rtol=1e-5)


def test_with_ipw_rejects_terms_without_per_sample_and_bad_options():
  info = logits_info(5, pooled=6)
  no_per_sample = dataclasses.replace(kd_lib.build_kd(info), per_sample=None)
  with pytest.raises(ValueError, match='per-sample loss'):
    ipwd.with_ipw(no_per_sample, info)
  with pytest.raises(ValueError, match='estimator'):
    ipwd.with_ipw(kd_lib.build_kd(info), info, estimator='nope')
  with pytest.raises(ValueError, match="did you mean 'pooled'"):
    ipwd.with_ipw(kd_lib.build_kd(info), info, feature='pooledd')
  with pytest.raises(ValueError, match='w_min <= w_max'):
    ipwd.with_ipw(kd_lib.build_kd(info), info, w_min=2.0, w_max=1.0)


def test_registered_ipw_method_wraps_a_config_entry():
  s, t, pooled = rand(9, 8, 5, scale=2.0), rand(10, 8, 5, scale=2.0), rand(11, 8, 6)
  labels = jnp.asarray([4, 3, 2, 1, 0, 4, 3, 2], jnp.int32)
  info = logits_info(5, pooled=6)
  (term,) = api.resolve_terms([dict(method='ipw', name='kd_ipw', cls_weight=0.0, w_max=3.0,
                                    term=dict(method='kd', weight=0.5, temperature=2.0))], info)
  assert (term.name, term.method, term.weight) == ('kd_ipw', 'kd', 0.5)
  aux = term.init(jax.random.key(1), api.example_context(info))
  ctx = make_ctx(s, t, labels, pooled)
  value, metrics, _ = term.loss(aux, ctx)
  z_cls = ipwd.ExtraHead(5).apply({'params': aux['params']['ipw_head']}, jnp.asarray(pooled))
  w = np.asarray(ipwd.ipw_weights(jnp.asarray(s), z_cls, labels, w_max=3.0))
  np.testing.assert_allclose(float(value), np.mean(w * np_kl_rows(s, t, 2.0)), rtol=1e-5)
  np.testing.assert_allclose(float(metrics['w_max']), w.max(), rtol=1e-6)
  with pytest.raises(ValueError, match='per-sample loss'):
    api.resolve_terms([dict(method='ipw', term=dict(method='dist'))], info)
  with pytest.raises(ValueError, match='has no hyper-parameter'):
    api.resolve_terms([dict(method='ipw', term=dict(method='kd', tau=2.0))], info)
