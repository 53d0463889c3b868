"""DIST, logit standardization (lskd), KD + logit adjustment (kd_la) and KDSVD.

Reference values are recomputed here in float64 numpy from the reference code's
formulas (DIST's official loss, the logit-standardization repo's `kd_loss`,
RepDistiller's `KDSVD`), independently of the library code.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses
from kdjax.distill import api
from kdjax.distill.methods import dist, kd_la, kdsvd, logit_stand

RTOL, ATOL = 2e-5, 1e-6


def rand(seed, *shape, scale=1.0):
  return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def np_softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def np_log_softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_kl_batchmean(z_s, z_t, tau):
  pt, log_ps, log_pt = np_softmax(z_t / tau), np_log_softmax(z_s / tau), np_log_softmax(z_t / tau)
  return tau ** 2 * np.sum(pt * (log_pt - log_ps)) / z_s.shape[0]


def logits_info(num_classes=10, batch=8, train_labels=None):
  sds = jax.ShapeDtypeStruct((batch, num_classes), jnp.float32)
  return api.BuildInfo({'logits': sds}, {'logits': sds}, num_classes, 100,
                       train_labels=train_labels)


def run_term(term, s, t, labels=None):
  ctx = api.Context(student={'logits': jnp.asarray(s)}, teacher={'logits': jnp.asarray(t)},
                    labels=jnp.zeros((s.shape[0],), jnp.int32) if labels is None else labels,
                    index=None, images=None, rng=jax.random.key(0), progress=jnp.zeros(()),
                    stage_epochs=1.0, train=True, num_classes=s.shape[1])
  return term.loss({}, ctx)


# ----------------------------------------------------------------------------
# DIST

def np_dist(z_s, z_t, beta, gamma, tau, eps=1e-8):
  y_s, y_t = np_softmax(np.float64(z_s) / tau), np_softmax(np.float64(z_t) / tau)

  def pearson_mean(a, b):
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + eps))
  inter = 1 - pearson_mean(y_s, y_t)
  intra = 1 - pearson_mean(y_s.T, y_t.T)
  return tau ** 2 * (beta * inter + gamma * intra)


def test_dist_hand_value():
  # Rows of 2-class softmaxes correlate with +-1 (row 0: -1, row 1: +1, inter = 1);
  # the teacher's class columns are constant over the batch (correlation 0, intra = 1).
  s = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  t = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)
  got = dist.dist_loss(jnp.asarray(s), jnp.asarray(t), beta=2.0, gamma=2.0, temperature=4.0)
  np.testing.assert_allclose(float(got), 16.0 * (2.0 + 2.0), rtol=1e-6)


def test_dist_reference_value_and_one_compile():
  chex.clear_trace_counter()
  f = jax.jit(chex.assert_max_traces(
      lambda s, t: dist.dist_loss(s, t, beta=2.0, gamma=1.5, temperature=4.0), n=1))
  for seed in (0, 3):
    s, t = rand(seed, 8, 10, scale=3.0), rand(seed + 1, 8, 10, scale=3.0)
    np.testing.assert_allclose(float(f(s, t)), np_dist(s, t, 2.0, 1.5, 4.0), rtol=RTOL, atol=ATOL)


def test_dist_invariances_and_gradients():
  s, t = rand(0, 6, 5, scale=2.0), rand(1, 6, 5, scale=2.0)
  f = jax.jit(lambda s, t: dist.dist_loss(s, t, temperature=4.0))
  # Zero up to the eps guard (1 - rho = eps / (|a| |b| + eps)) and float32 rounding.
  assert np_dist(t, t, 2.0, 2.0, 4.0) < 1e-4 and abs(float(f(t, t))) < 1e-4
  # Softmax ignores a per-row shift of the logits.
  shift = rand(2, 6, 1, scale=5.0)
  np.testing.assert_allclose(float(f(s + shift, t)), float(f(s, t)), rtol=1e-5)
  grad = jax.jit(jax.grad(f, argnums=(0, 1)))
  g_s, g_t = grad(jnp.asarray(s), jnp.asarray(t))
  assert np.abs(np.asarray(g_s)).max() > 0 and np.all(np.asarray(g_t) == 0)
  # A uniform student (zero variance) gives a finite gradient, as PyTorch's norm does.
  g0 = grad(jnp.zeros((6, 5)), jnp.asarray(t))[0]
  assert np.isfinite(np.asarray(g0)).all()


def test_dist_term_matches_pure_loss_and_checks_input():
  s, t = rand(4, 8, 10), rand(5, 8, 10)
  term = dist.build_dist(logits_info(), beta=1.0, gamma=3.0, temperature=2.0)
  value, metrics, _ = run_term(term, s, t)
  np.testing.assert_allclose(float(value), np_dist(s, t, 1.0, 3.0, 2.0), rtol=RTOL)
  assert set(metrics) == {'inter', 'intra'}
  with pytest.raises(ValueError, match='temperature'):
    dist.build_dist(logits_info(), temperature=0.0)


# ----------------------------------------------------------------------------
# Logit standardization

def np_lskd(z_s, z_t, tau, eps=1e-7):
  def z(x):
    x = np.float64(x)
    return (x - x.mean(1, keepdims=True)) / (eps + x.std(1, ddof=1, keepdims=True))
  return np_kl_batchmean(z(z_s), z(z_t), tau)


def test_standardize_hand_value():
  # [1, 2, 3]: mean 2, unbiased std 1 -> [-1, 0, 1] (up to the 1e-7 guard).
  got = logit_stand.standardize(jnp.asarray([[1.0, 2.0, 3.0]]))
  np.testing.assert_allclose(np.asarray(got), [[-1.0, 0.0, 1.0]], rtol=1e-6)


def test_lskd_reference_value_and_one_compile():
  chex.clear_trace_counter()
  f = jax.jit(chex.assert_max_traces(lambda s, t: logit_stand.lskd(s, t, temperature=2.0), n=1))
  for seed in (0, 9):
    s, t = rand(seed, 8, 10, scale=3.0), rand(seed + 1, 8, 10, scale=5.0)
    np.testing.assert_allclose(float(f(s, t)), np_lskd(s, t, 2.0), rtol=RTOL, atol=ATOL)


def test_lskd_affine_invariance_and_gradients():
  s, t = rand(0, 6, 7), rand(1, 6, 7, scale=4.0)
  f = jax.jit(lambda s, t: logit_stand.lskd(s, t, temperature=2.0))
  # Any positive per-row affine map of the teacher's logits is a perfect student.
  a, b = np.abs(rand(2, 6, 1)) + 0.5, rand(3, 6, 1, scale=10.0)
  assert abs(float(f(a * t + b, t))) < 1e-5
  np.testing.assert_allclose(float(f(3.0 * s - 1.0, t)), float(f(s, t)), rtol=1e-5)
  grad = jax.jit(jax.grad(f, argnums=(0, 1)))
  g_s, g_t = grad(jnp.asarray(s), jnp.asarray(t))
  assert np.abs(np.asarray(g_s)).max() > 0 and np.all(np.asarray(g_t) == 0)
  assert np.isfinite(np.asarray(grad(jnp.ones((6, 7)), jnp.asarray(t))[0])).all()


def test_lskd_term_defaults_are_the_cifar_settings():
  term = logit_stand.build_lskd(logits_info())
  assert term.weight == 9.0
  s, t = rand(4, 8, 10), rand(5, 8, 10)
  value, _, _ = run_term(term, s, t)
  np.testing.assert_allclose(float(value), np_lskd(s, t, 2.0), rtol=RTOL)


# ----------------------------------------------------------------------------
# KD + logit adjustment

def test_class_log_prior_hand_value_and_errors():
  got = kd_la.class_log_prior(np.array([0, 0, 1, 2]), 3)
  np.testing.assert_allclose(got, np.log([0.5, 0.25, 0.25]), rtol=1e-6)
  with pytest.raises(ValueError, match='no training samples'):
    kd_la.class_log_prior(np.array([0, 0, 1]), 3)
  with pytest.raises(ValueError, match=r'\[0, 3\)'):
    kd_la.class_log_prior(np.array([0, 3]), 3)


def test_kd_la_reference_value_and_reductions():
  s, t = rand(0, 8, 4, scale=2.0), rand(1, 8, 4, scale=2.0)
  log_prior = np.log(np.array([0.4, 0.3, 0.2, 0.1]))
  got = kd_la.kd_logit_adjusted(s, t, log_prior, temperature=4.0, la_tau=1.5)
  ref = np_kl_batchmean(np.float64(s) + 1.5 * log_prior, np.float64(t), 4.0)
  np.testing.assert_allclose(float(got), ref, rtol=RTOL)
  # A uniform prior shifts every logit equally, and la_tau = 0 removes it: plain KD.
  kd = float(losses.kd(jnp.asarray(s), jnp.asarray(t), temperature=4.0))
  uniform = np.full(4, np.log(0.25))
  np.testing.assert_allclose(float(kd_la.kd_logit_adjusted(s, t, uniform)), kd, rtol=1e-5)
  np.testing.assert_allclose(float(kd_la.kd_logit_adjusted(s, t, log_prior, la_tau=0.0)), kd,
                             rtol=1e-6)
  g_t = jax.grad(kd_la.kd_logit_adjusted, argnums=1)(jnp.asarray(s), jnp.asarray(t), log_prior)
  assert np.all(np.asarray(g_t) == 0)


def test_kd_la_term_uses_training_labels_or_explicit_prior():
  labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
  s, t = rand(2, 8, 3), rand(3, 8, 3)
  term = kd_la.build_kd_la(logits_info(3, train_labels=labels), la_tau=1.0)
  value, _, _ = run_term(term, s, t)
  ref = np_kl_batchmean(np.float64(s) + np.log([0.6, 0.3, 0.1]), np.float64(t), 4.0)
  np.testing.assert_allclose(float(value), ref, rtol=RTOL)
  explicit = kd_la.build_kd_la(logits_info(3), prior=[6, 3, 1])
  np.testing.assert_allclose(float(run_term(explicit, s, t)[0]), ref, rtol=RTOL)
  with pytest.raises(ValueError, match='prior='):
    kd_la.build_kd_la(logits_info(3))
  with pytest.raises(ValueError, match='positive'):
    kd_la.build_kd_la(logits_info(3), prior=[1, 0, 1])


# ----------------------------------------------------------------------------
# KDSVD

def np_top_singular(f, n):
  """RD KDSVD.svd in float64 numpy on an NHWC map, with the library's sign convention."""
  b, h, w, c = f.shape
  x = np.float64(f).reshape(b, h * w, c)
  _, s, vh = np.linalg.svd(x, full_matrices=False)
  v = vh.transpose(0, 2, 1)
  idx = np.abs(v).argmax(axis=1)[:, None, :]
  sign = np.sign(np.take_along_axis(v, idx, axis=1))
  v = v * np.where(sign == 0, 1, sign)
  s, v = s[:, :n], v[:, :, :n]
  s = s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)
  v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
  return s, v


def np_kdsvd(fs_list, ft_list, k=1):
  total, prev = 0.0, None
  for i, (fs, ft) in enumerate(zip(fs_list, ft_list)):
    s_t, v_t = np_top_singular(ft, k)
    _, v_s = np_top_singular(fs, k + 3)
    cos = v_s.transpose(0, 2, 1) @ v_t
    mask = np.where(np.abs(cos).max(1, keepdims=True) == np.abs(cos), np.sign(cos), 0)
    v_s = v_s @ mask
    v_t, v_s = v_t * s_t[:, None, :], v_s * s_t[:, None, :]
    if i > 0:
      g_s = np.exp(-(v_s[:, :, None, :] - prev[0][:, None, :, :]) ** 2 / 8)
      g_t = np.exp(-(v_t[:, :, None, :] - prev[1][:, None, :, :]) ** 2 / 8)
      total += np.sum((g_s - g_t) ** 2)
    prev = (v_s, v_t)
  return total / fs_list[0].shape[0]


def feature_maps(seed, channels=(4, 6, 8), sizes=(6, 4, 3), batch=3):
  return [rand(seed + i, batch, h, h, c) for i, (c, h) in enumerate(zip(channels, sizes))]


def test_kdsvd_reference_value_and_one_compile():
  chex.clear_trace_counter()
  f = jax.jit(chex.assert_max_traces(lambda s, t: kdsvd.kdsvd_loss(s, t, k=2), n=1))
  for seed in (0, 10):
    fs, ft = feature_maps(seed), feature_maps(seed + 5)
    np.testing.assert_allclose(float(f(fs, ft)), np_kdsvd(fs, ft, k=2), rtol=1e-4, atol=1e-6)


def test_kdsvd_zero_at_equal_and_no_teacher_gradient():
  fs, ft = feature_maps(1), feature_maps(2)
  value_and_grad = jax.jit(jax.value_and_grad(kdsvd.kdsvd_loss, argnums=(0, 1)))
  assert abs(float(value_and_grad(ft, ft)[0])) < 1e-10
  _, (g_s, g_t) = value_and_grad(fs, ft)
  assert max(float(jnp.abs(g).max()) for g in g_s) > 0
  assert all(np.all(np.asarray(g) == 0) for g in g_t)


def test_svd_derivative_matches_jax_and_stays_finite_when_degenerate():
  jax.config.update('jax_enable_x64', True)
  try:
    def objective(x, ours):
      if ours:
        s, v = kdsvd.svd_right(x)
      else:
        _, s, vh = jnp.linalg.svd(x, full_matrices=False)
        v = jnp.swapaxes(vh, -1, -2)
      return jnp.sum(s * jnp.arange(s.shape[-1])) + jnp.sum(jnp.sin(kdsvd._fix_sign(v)[..., :2]))
    grad = jax.jit(jax.grad(objective), static_argnums=1)
    x = np.random.default_rng(0).normal(size=(2, 7, 4))
    for m in (x, x.transpose(0, 2, 1)):  # tall and wide
      np.testing.assert_allclose(grad(m, True), grad(m, False), rtol=1e-9, atol=1e-12)
    # Two dead channels: equal (zero) singular values. The textbook derivative is NaN.
    d = np.zeros((2, 7, 5))
    d[:, :, :3] = np.random.default_rng(1).normal(size=(2, 7, 3))
    assert np.isnan(np.asarray(grad(d, False))).any()
    assert np.isfinite(np.asarray(grad(d, True))).all()
  finally:
    jax.config.update('jax_enable_x64', False)


def test_kdsvd_builder_checks_channels():
  sds = lambda *s: jax.ShapeDtypeStruct((2,) + s, jnp.float32)
  student = {'stage1': sds(8, 8, 16), 'stage2': sds(4, 4, 32), 'logits': sds(10)}
  teacher = {'stage1': sds(8, 8, 16), 'stage2': sds(4, 4, 64), 'logits': sds(10)}
  info = api.BuildInfo(student, teacher, 10, 100)
  with pytest.raises(ValueError, match='equal channel counts'):
    kdsvd.build_kdsvd(info)
  ok = api.BuildInfo(student, dict(student), 10, 100)
  term = kdsvd.build_kdsvd(ok)
  assert term.weight == 1.0
  fs = {k: jnp.asarray(rand(i, *v.shape)) for i, (k, v) in enumerate(student.items())}
  ft = {k: jnp.asarray(rand(i + 7, *v.shape)) for i, (k, v) in enumerate(student.items())}
  ctx = api.example_context(ok)
  run = jax.jit(lambda fs, ft: term.loss({}, dataclasses.replace(ctx, student=fs, teacher=ft))[0])
  np.testing.assert_allclose(float(run(fs, ft)),
                             np_kdsvd([fs['stage1'], fs['stage2']], [ft['stage1'], ft['stage2']]),
                             rtol=1e-4)
