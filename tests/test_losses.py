"""Tests of kdjax.losses: reference values, invariances, gradients, degenerate inputs.

Expected values are recomputed here in float64 numpy, step by step in the
reference code's layout (NCHW, PyTorch reductions), independently of the
library code.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses
from kdjax.distill.methods import at as at_lib
from kdjax.distill.methods import cc as cc_lib
from kdjax.distill.methods import dkd as dkd_lib
from kdjax.distill.methods import fsp as fsp_lib
from kdjax.distill.methods import nst as nst_lib
from kdjax.distill.methods import pkt as pkt_lib
from kdjax.distill.methods import rkd as rkd_lib
from kdjax.distill.methods import sp as sp_lib
from kdjax.distill.methods import tfkd as tfkd_lib
from kdjax.distill.methods import wsld as wsld_lib

RTOL = 2e-5
ATOL = 1e-6


def rand(seed, *shape, scale=1.0):
  return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def nchw(x):
  return np.asarray(x, np.float64).transpose(0, 3, 1, 2)


# ----------------------------------------------------------------------------
# numpy references (PyTorch semantics)

def np_softmax(z, axis=-1):
  z = z - z.max(axis=axis, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(z, axis=-1):
  z = z - z.max(axis=axis, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def np_kl_div_sum(log_input, target):
  """torch F.kl_div(log_input, target, reduction='sum') with 0 log 0 = 0."""
  pos = target > 0
  return np.sum(target[pos] * (np.log(target[pos]) - log_input[pos]))


def np_adaptive_pool(x, out_h, out_w):
  """torch adaptive_avg_pool2d on NCHW, written with explicit bins."""
  n, c, h, w = x.shape
  y = np.zeros((n, c, out_h, out_w))
  for i in range(out_h):
    h0, h1 = math.floor(i * h / out_h), math.ceil((i + 1) * h / out_h)
    for j in range(out_w):
      w0, w1 = math.floor(j * w / out_w), math.ceil((j + 1) * w / out_w)
      y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
  return y


def np_match(a, b):
  if a.shape[2] > b.shape[2]:
    a = np_adaptive_pool(a, b.shape[2], b.shape[3])
  elif a.shape[2] < b.shape[2]:
    b = np_adaptive_pool(b, a.shape[2], a.shape[3])
  return a, b


def np_normalize(x, axis):
  return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def np_kd(zs, zt, tau):
  zs, zt = np.float64(zs), np.float64(zt)
  return np_kl_div_sum(np_log_softmax(zs / tau), np_softmax(zt / tau)) * tau**2 / zs.shape[0]


def np_dkd(zs, zt, y, alpha, beta, tau):
  zs, zt = np.float64(zs), np.float64(zt)
  n, k = zs.shape
  gt = np.zeros((n, k))
  gt[np.arange(n), y] = 1
  ps, pt = np_softmax(zs / tau), np_softmax(zt / tau)
  bs = np.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
  bt = np.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
  tckd = np_kl_div_sum(np.log(bs), bt) * tau**2 / n
  qt = np_softmax(zt / tau - 1000.0 * gt)
  log_qs = np_log_softmax(zs / tau - 1000.0 * gt)
  nckd = np_kl_div_sum(log_qs, qt) * tau**2 / n
  return alpha * tckd + beta * nckd


def np_at(fs_list, ft_list, p=2):
  total = 0.0
  for fs, ft in zip(fs_list, ft_list):
    fs, ft = np_match(nchw(fs), nchw(ft))
    def at(f):
      return np_normalize((np.abs(f) ** p).mean(1).reshape(f.shape[0], -1), 1)
    total += ((at(fs) - at(ft)) ** 2).mean()
  return total


def np_sp(fs_list, ft_list):
  total = 0.0
  for fs, ft in zip(fs_list, ft_list):
    fs, ft = nchw(fs), nchw(ft)
    n = fs.shape[0]
    fs, ft = fs.reshape(n, -1), ft.reshape(n, -1)
    gs, gt = np_normalize(fs @ fs.T, 1), np_normalize(ft @ ft.T, 1)
    total += ((gt - gs) ** 2).sum() / (n * n)
  return total


def np_smooth_l1(a, b):
  d = np.abs(a - b)
  return np.where(d < 1, 0.5 * d**2, d - 0.5).mean()


def np_pdist(e):
  n = e.shape[0]
  d = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      sq = (e[i] ** 2).sum() + (e[j] ** 2).sum() - 2 * e[i] @ e[j]
      d[i, j] = 0.0 if i == j else math.sqrt(max(sq, 1e-12))
  return d


def np_rkd_parts(es, et):
  es, et = np.float64(es).reshape(len(es), -1), np.float64(et).reshape(len(et), -1)
  def dist(e):
    d = np_pdist(e)
    return d / d[d > 0].mean()
  def angles(e):
    n = e.shape[0]
    out = np.zeros((n, n, n))
    for i in range(n):
      for j in range(n):
        for k in range(n):
          u = e[j] - e[i]
          v = e[k] - e[i]
          u = u / max(np.linalg.norm(u), 1e-12)
          v = v / max(np.linalg.norm(v), 1e-12)
          out[i, j, k] = u @ v
    return out.reshape(-1)
  return np_smooth_l1(dist(es), dist(et)), np_smooth_l1(angles(es), angles(et))


def np_pkt(es, et, eps=1e-7):
  def cond(x):
    x = np.float64(x)
    x = x / (np.sqrt((x**2).sum(1, keepdims=True)) + eps)
    x[x != x] = 0
    k = (x @ x.T + 1.0) / 2.0
    return k / k.sum(1, keepdims=True)
  ps, pt = cond(es), cond(et)
  return (pt * np.log((pt + eps) / (ps + eps))).mean()


def np_nst(fs_list, ft_list):
  total = 0.0
  for fs, ft in zip(fs_list, ft_list):
    fs, ft = np_match(nchw(fs), nchw(ft))
    n = fs.shape[0]
    fs = np_normalize(fs.reshape(n, fs.shape[1], -1), 2)
    ft = np_normalize(ft.reshape(n, ft.shape[1], -1), 2)
    def poly(a, b):
      out = np.zeros((n, b.shape[1], a.shape[1]))
      for m in range(n):
        for i in range(b.shape[1]):
          for j in range(a.shape[1]):
            out[m, i, j] = (a[m, j] @ b[m, i]) ** 2
      return out
    total += poly(ft, ft).mean() + poly(fs, fs).mean() - 2 * poly(fs, ft).mean()
  return total


def np_fsp(fs_list, ft_list, weights=None):
  def mats(g):
    out = []
    for bot, top in zip(g[:-1], g[1:]):
      bot, top = np_match(nchw(bot), nchw(top))
      n, cb, ct = bot.shape[0], bot.shape[1], top.shape[1]
      bot, top = bot.reshape(n, cb, -1), top.reshape(n, ct, -1)
      m = np.zeros((n, ct, cb))
      for i in range(ct):
        for j in range(cb):
          m[:, i, j] = (top[:, i] * bot[:, j]).mean(-1)
      out.append(m)
    return out
  weights = weights or [1.0] * (len(fs_list) - 1)
  return sum(w * ((s - t) ** 2).mean() for w, s, t in zip(weights, mats(fs_list), mats(ft_list)))


def np_cc(es, et):
  delta = np.abs(np.float64(es) - np.float64(et))
  return np.mean([(delta[i] * delta[i + 1]).sum() for i in range(len(delta) - 1)])


def np_cc_rbf(es, et, gamma=0.4, order=2):
  def corr(e):
    f = np_normalize(np.float64(e), 1)
    s = f @ f.T
    return sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * s**p
               for p in range(order + 1))
  return ((corr(es) - corr(et)) ** 2).mean()


def np_soft_ce(z, q, tau):
  return -(np.float64(q) * np_log_softmax(np.float64(z) / tau)).sum(1).mean()


def np_tfkd(z, y, k, correct_prob, tau, m, paper):
  z = np.float64(z)
  n = z.shape[0]
  teacher = np.ones((n, k)) * (1 - correct_prob) / (k - 1)
  teacher[np.arange(n), y] = correct_prob
  if paper:
    target = np_softmax(np.log(teacher) / tau)
    return m * np_kl_div_sum(np_log_softmax(z / tau), target) / n
  target = np_softmax(teacher / tau)
  return m * np_kl_div_sum(np_log_softmax(z), target) / (n * k)  # KLDivLoss() = mean


def np_wsld(zs, zt, y, tau):
  zs, zt = np.float64(zs), np.float64(zt)
  n = zs.shape[0]
  soft = -(np_softmax(zt / tau) * np_log_softmax(zs / tau)).sum(1)
  ce_s = -np_log_softmax(zs)[np.arange(n), y]
  ce_t = -np_log_softmax(zt)[np.arange(n), y]
  w = 1 - np.exp(-np.maximum(ce_s / (ce_t + 1e-7), 0))
  return w, tau**2 * (w * soft).mean()


# ----------------------------------------------------------------------------
# The cases: fn(student, teacher, labels) and input makers.

K = 5


def logits_inputs(n, seed=0):
  return rand(seed, n, K, scale=2.0), rand(seed + 1, n, K, scale=2.0), \
      (np.arange(n) % K).astype(np.int32)


def maps_inputs(n, seed=0):
  s = [rand(seed, n, 4, 4, 3), rand(seed + 1, n, 2, 2, 4)]
  t = [rand(seed + 2, n, 4, 4, 5), rand(seed + 3, n, 2, 2, 6)]
  return s, t, None


def fsp_inputs(n, seed=0):
  s = [rand(seed, n, 4, 4, 2), rand(seed + 1, n, 4, 4, 3), rand(seed + 2, n, 2, 2, 4)]
  t = [rand(seed + 3, n, 4, 4, 2), rand(seed + 4, n, 4, 4, 3), rand(seed + 5, n, 2, 2, 4)]
  return s, t, None


def emb_inputs(n, seed=0, same_dim=False):
  return rand(seed, n, 6), rand(seed + 1, n, 6 if same_dim else 8), None


def probs_inputs(n, seed=0):
  z = rand(seed, n, K, scale=2.0)
  q = np_softmax(rand(seed + 1, n, K)).astype(np.float32)
  return z, q, None


CASES = {
    'kd': (lambda s, t, y: losses.kd(s, t, temperature=4.0), logits_inputs,
           lambda s, t, y: np_kd(s, t, 4.0)),
    'dkd': (lambda s, t, y: dkd_lib.dkd(s, t, y, alpha=1.0, beta=8.0, temperature=4.0),
            logits_inputs, lambda s, t, y: np_dkd(s, t, y, 1.0, 8.0, 4.0)),
    'wsld': (lambda s, t, y: wsld_lib.wsld(s, t, y, temperature=2.0), logits_inputs,
             lambda s, t, y: np_wsld(s, t, y, 2.0)[1]),
    'soft_cross_entropy': (lambda s, t, y: losses.soft_cross_entropy(s, t, temperature=3.0),
                           probs_inputs, lambda s, t, y: np_soft_ce(s, t, 3.0)),
    'attention': (lambda s, t, y: at_lib.attention(s, t), maps_inputs,
                  lambda s, t, y: np_at(s, t)),
    'nst': (lambda s, t, y: nst_lib.nst(s, t), maps_inputs, lambda s, t, y: np_nst(s, t)),
    'fsp': (lambda s, t, y: fsp_lib.fsp(s, t), fsp_inputs, lambda s, t, y: np_fsp(s, t)),
    'similarity_preserving': (lambda s, t, y: sp_lib.similarity_preserving(s, t), maps_inputs,
                              lambda s, t, y: np_sp(s, t)),
    'rkd': (lambda s, t, y: rkd_lib.rkd(s, t), emb_inputs,
            lambda s, t, y: float(np.dot([25.0, 50.0], np_rkd_parts(s, t)))),
    'rkd_distance': (lambda s, t, y: rkd_lib.rkd_distance(s, t), emb_inputs,
                     lambda s, t, y: np_rkd_parts(s, t)[0]),
    'rkd_angle': (lambda s, t, y: rkd_lib.rkd_angle(s, t), emb_inputs,
                  lambda s, t, y: np_rkd_parts(s, t)[1]),
    'pkt': (lambda s, t, y: pkt_lib.pkt(s, t), emb_inputs, lambda s, t, y: np_pkt(s, t)),
    'correlation_congruence': (lambda s, t, y: cc_lib.correlation_congruence(s, t),
                               functools.partial(emb_inputs, same_dim=True),
                               lambda s, t, y: np_cc(s, t)),
    'correlation_congruence_rbf': (lambda s, t, y: cc_lib.correlation_congruence_rbf(s, t),
                                   emb_inputs, lambda s, t, y: np_cc_rbf(s, t)),
}
# Losses whose value at student == teacher is 0 (the others are entropies).
ZERO_AT_EQUAL = set(CASES) - {'wsld', 'soft_cross_entropy'}
NAMES = sorted(CASES)
VARIANTS = {'nojit': lambda f: f, 'jit': jax.jit}


def _jnp(tree):
  return jax.tree.map(jnp.asarray, tree)


@pytest.fixture(params=sorted(VARIANTS))
def variant(request):
  return VARIANTS[request.param]


@pytest.mark.parametrize('name', NAMES)
def test_reference_value_and_one_compile_per_shape(name, variant):
  fn, make, ref = CASES[name]
  chex.clear_trace_counter()  # the counter is keyed by code, shared across parameters
  f = variant(chex.assert_max_traces(fn, n=1))
  for seed in (0, 7):  # same shapes, new values: the jitted variant must not retrace
    s, t, y = make(4, seed=seed)
    got = f(*_jnp((s, t, y)))
    chex.assert_shape(got, ())
    np.testing.assert_allclose(float(got), ref(s, t, y), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('name', sorted(ZERO_AT_EQUAL))
def test_zero_when_student_equals_teacher(name):
  fn, make, _ = CASES[name]
  s, _, y = make(4)
  t = s
  assert abs(float(jax.jit(fn)(*_jnp((s, t, y))))) < 1e-6


def test_soft_cross_entropy_minimal_at_target():
  z, q, _ = probs_inputs(4)
  base = float(losses.soft_cross_entropy(jnp.asarray(np.log(q)), jnp.asarray(q)))
  np.testing.assert_allclose(base, -(np.float64(q) * np.log(q)).sum(1).mean(), rtol=1e-5)
  for seed in range(3):
    other = np.log(q) + rand(10 + seed, *q.shape, scale=0.5)
    assert float(losses.soft_cross_entropy(jnp.asarray(other), jnp.asarray(q))) >= base - 1e-6


def test_wsld_at_student_equals_teacher():
  """Equal logits give ratio 1, w = 1 - 1/e, and the loss is tau^2 w H(p_t^tau)."""
  _, t, y = logits_inputs(4)
  got = wsld_lib.wsld(*_jnp((t, t, y)), temperature=2.0)
  pt = np_softmax(np.float64(t) / 2.0)
  want = 4.0 * (1 - math.exp(-1)) * -(pt * np.log(pt)).sum(1).mean()
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def _degenerate(name, kind):
  _, make, _ = CASES[name]
  n = {'batch1': 1, 'batch2': 2}.get(kind, 3)
  s, t, y = make(n, seed=3)
  if kind == 'zeros':
    s, t = jax.tree.map(np.zeros_like, (s, t))
    if name == 'soft_cross_entropy':
      t = np.full_like(t, 1.0 / K)
  elif kind == 'identical_rows':
    s, t = jax.tree.map(lambda x: np.broadcast_to(x[:1], x.shape).copy(), (s, t))
  elif kind == 'equal' and name != 'soft_cross_entropy':
    t = s
  return s, t, y


@pytest.mark.parametrize('name', NAMES)
def test_gradients_finite_and_zero_into_teacher(name):
  """Random inputs, all zeros, identical rows, student == teacher, batches of 1 and 2.

  The loss and both gradients are finite, the teacher's gradient is exactly 0,
  and the student's is non-zero on random inputs.
  """
  value_and_grad = jax.jit(jax.value_and_grad(CASES[name][0], argnums=(0, 1)))
  for kind in ('random', 'zeros', 'identical_rows', 'equal', 'batch1', 'batch2'):
    s, t, y = _degenerate(name, kind)
    value, (g_s, g_t) = value_and_grad(*_jnp((s, t, y)))
    assert np.isfinite(float(value)), (name, kind, value)
    for leaf in jax.tree.leaves((g_s, g_t)):
      assert np.all(np.isfinite(np.asarray(leaf))), (name, kind)
    for leaf in jax.tree.leaves(g_t):
      assert np.all(np.asarray(leaf) == 0.0), (name, kind)
    if kind == 'random':
      assert any(np.abs(np.asarray(l)).max() > 0 for l in jax.tree.leaves(g_s)), name


# ----------------------------------------------------------------------------
# Invariances implied by the definitions

def test_kd_invariant_to_logit_shift():
  s, t, _ = logits_inputs(4)
  a = losses.kd(jnp.asarray(s), jnp.asarray(t))
  b = losses.kd(jnp.asarray(s + 3.0), jnp.asarray(t - 7.0))
  np.testing.assert_allclose(float(a), float(b), rtol=1e-5)


def test_kd_temperature_scaling():
  s, t, _ = logits_inputs(4)
  np.testing.assert_allclose(float(losses.kd(jnp.asarray(s), jnp.asarray(t), temperature=2.0)),
                             np_kd(s, t, 2.0), rtol=RTOL)


@pytest.mark.parametrize('loss', ['attention', 'similarity_preserving', 'nst'])
def test_map_losses_invariant_to_positive_rescaling(loss):
  fn = CASES[loss][0]
  s, t, _ = maps_inputs(4)
  a = fn(_jnp(s), _jnp(t), None)
  b = fn(_jnp([3.7 * x for x in s]), _jnp([0.2 * x for x in t]), None)
  np.testing.assert_allclose(float(a), float(b), rtol=1e-4)


@pytest.mark.parametrize('loss', ['rkd', 'pkt', 'correlation_congruence_rbf'])
def test_embedding_losses_invariant_to_global_scale(loss):
  fn = CASES[loss][0]
  s, t, _ = emb_inputs(5)
  a = fn(jnp.asarray(s), jnp.asarray(t), None)
  b = fn(jnp.asarray(4.0 * s), jnp.asarray(0.3 * t), None)
  np.testing.assert_allclose(float(a), float(b), rtol=1e-4)


def test_losses_sum_over_layers():
  s, t, _ = maps_inputs(3)
  for fn in (at_lib.attention, nst_lib.nst, sp_lib.similarity_preserving):
    fn = jax.jit(fn)
    whole = fn(_jnp(s), _jnp(t))
    parts = sum(fn(_jnp([a]), _jnp([b])) for a, b in zip(s, t))
    np.testing.assert_allclose(float(whole), float(parts), rtol=1e-5)


# ----------------------------------------------------------------------------
# Pooling and spatial mismatch

def test_adaptive_pool_matches_torch_bins():
  x = rand(0, 2, 5, 7, 3)
  got = losses.adaptive_avg_pool_to(jnp.asarray(x), (3, 4))
  want = np_adaptive_pool(nchw(x), 3, 4).transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  # 8 -> 4 is a plain 2x2 mean.
  y = rand(1, 1, 8, 8, 2)
  got = losses.adaptive_avg_pool_to(jnp.asarray(y), (4, 4))
  np.testing.assert_allclose(np.asarray(got), y.reshape(1, 4, 2, 4, 2, 2).mean((2, 4)),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('loss', ['attention', 'nst'])
def test_spatial_mismatch_pools_the_teacher(loss):
  fn = {'attention': at_lib.attention, 'nst': nst_lib.nst}[loss]
  s = [rand(0, 2, 4, 4, 3)]
  t = [rand(1, 2, 8, 8, 5)]
  t_pooled = [t[0].reshape(2, 4, 2, 4, 2, 5).mean((2, 4))]
  got = fn(_jnp(s), _jnp(t))
  np.testing.assert_allclose(float(got), float(fn(_jnp(s), _jnp(t_pooled))), rtol=1e-5)
  ref = np_at(s, t) if loss == 'attention' else np_nst(s, t)
  np.testing.assert_allclose(float(got), ref, rtol=RTOL, atol=ATOL)
  # and symmetric: a larger student map is pooled down to the teacher's.
  got2 = fn(_jnp(t), _jnp(s))
  np.testing.assert_allclose(float(got2), float(fn(_jnp(t_pooled), _jnp(s))), rtol=1e-5)


def test_fsp_pools_within_a_pair_and_weights_pairs():
  s, t, _ = fsp_inputs(3)
  w = [1.0, 3.0]
  np.testing.assert_allclose(float(fsp_lib.fsp(_jnp(s), _jnp(t), pair_weights=w)),
                             np_fsp(s, t, w), rtol=RTOL, atol=ATOL)
  with pytest.raises(ValueError, match='pair_weights'):
    fsp_lib.fsp(_jnp(s), _jnp(t), pair_weights=[1.0])


def test_fsp_rejects_channel_mismatch():
  s, t, _ = fsp_inputs(2)
  t = [t[0], rand(9, 2, 4, 4, 7), t[2]]
  with pytest.raises(ValueError, match='channel'):
    fsp_lib.fsp(_jnp(s), _jnp(t))


# ----------------------------------------------------------------------------
# Loss-specific values

def test_dkd_parts():
  """alpha/beta split: TCKD alone and NCKD alone match the reference parts."""
  s, t, y = logits_inputs(4)
  args = _jnp((s, t, y))
  tckd = dkd_lib.dkd(*args, alpha=1.0, beta=0.0)
  nckd = dkd_lib.dkd(*args, alpha=0.0, beta=1.0)
  np.testing.assert_allclose(float(tckd), np_dkd(s, t, y, 1.0, 0.0, 4.0), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(float(nckd), np_dkd(s, t, y, 0.0, 1.0, 4.0), rtol=RTOL, atol=ATOL)


def test_dkd_extreme_logits_finite():
  """Where the reference's log(p_gt) underflows to -inf, dkd stays finite."""
  s = np.array([[200.0, -200.0, 0.0]], np.float32)
  t = np.array([[-200.0, 200.0, 0.0]], np.float32)
  y = np.array([1], np.int32)
  v, g = jax.jit(jax.value_and_grad(functools.partial(dkd_lib.dkd, temperature=1.0)))(
      *_jnp((s, t, y)))
  assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize('paper_form', [False, True])
def test_label_smoothing_kd(paper_form, variant):
  z, _, y = logits_inputs(4)
  fn = variant(functools.partial(tfkd_lib.label_smoothing_kd, num_classes=K,
                                 paper_form=paper_form))
  got = fn(jnp.asarray(z), jnp.asarray(y))
  np.testing.assert_allclose(float(got), np_tfkd(z, y, K, 0.99, 20.0, 100.0, paper_form),
                             rtol=RTOL, atol=ATOL)


def test_label_smoothing_kd_zero_at_target_and_degenerate():
  y = np.array([0, 3, 1], np.int32)
  teacher = np.full((3, K), 0.01 / (K - 1))
  teacher[np.arange(3), y] = 0.99
  target = np_softmax(teacher / 20.0)
  z = np.log(target).astype(np.float32)  # softmax(z) = target
  assert abs(float(tfkd_lib.label_smoothing_kd(jnp.asarray(z), jnp.asarray(y), K))) < 1e-5
  value_and_grad = jax.jit(jax.value_and_grad(
      functools.partial(tfkd_lib.label_smoothing_kd, num_classes=K)))
  for zz, yy in ((np.zeros((1, K), np.float32), y[:1]), (np.zeros((3, K), np.float32), y)):
    v, g = value_and_grad(jnp.asarray(zz), jnp.asarray(yy))
    assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))
  with pytest.raises(ValueError, match='num_classes'):
    tfkd_lib.label_smoothing_kd(jnp.asarray(z), jnp.asarray(y), K + 1)


def test_wsld_weights():
  s, t, y = logits_inputs(6)
  w = wsld_lib.weighted_soft_label_weights(*_jnp((s, t, y)))
  np.testing.assert_allclose(np.asarray(w), np_wsld(s, t, y, 2.0)[0], rtol=1e-5, atol=1e-6)
  assert np.all((np.asarray(w) >= 0) & (np.asarray(w) < 1))
  # the weights carry no gradient
  g = jax.grad(lambda a: wsld_lib.weighted_soft_label_weights(a, jnp.asarray(t),
                                                            jnp.asarray(y)).sum())(jnp.asarray(s))
  assert np.all(np.asarray(g) == 0)


def test_rkd_teacher_and_scale_handling():
  s, t, _ = emb_inputs(4)
  d_only = rkd_lib.rkd(jnp.asarray(s), jnp.asarray(t), angle_weight=0.0)
  np.testing.assert_allclose(float(d_only), 25.0 * float(rkd_lib.rkd_distance(jnp.asarray(s),
                                                                              jnp.asarray(t))),
                             rtol=1e-6)


def test_correlation_congruence_batch_of_one_is_zero():
  s, t, _ = emb_inputs(1, same_dim=True)
  assert float(cc_lib.correlation_congruence(jnp.asarray(s), jnp.asarray(t))) == 0.0


def test_shape_checks():
  s, t, y = logits_inputs(4)
  with pytest.raises(AssertionError):
    losses.kd(jnp.asarray(s), jnp.asarray(t[:, :3]))
  with pytest.raises(AssertionError):
    losses.kd(jnp.asarray(s[0]), jnp.asarray(t[0]))
  with pytest.raises(AssertionError):
    rkd_lib.rkd(jnp.asarray(rand(0, 4, 3)), jnp.asarray(rand(1, 5, 3)))
  with pytest.raises(TypeError, match='sequence'):
    at_lib.attention(jnp.asarray(rand(0, 2, 4, 4, 3)), jnp.asarray(rand(0, 2, 4, 4, 3)))
  with pytest.raises(ValueError, match='same non-zero number'):
    at_lib.attention(_jnp([rand(0, 2, 4, 4, 3)]), [])
