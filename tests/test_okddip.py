"""OKDDip: parameter count (paper: 1.53M for ResNet-32, 7 classes), attention targets,
the official loss in float64 numpy, and training steps of okddip_resnet8."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import models
from kdjax.distill import api
from kdjax.distill.methods import okddip as method
from kdjax.models import okddip


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def reference_count(depth, classes, branches, factor=8):
  """Parameters of the official resnet_GL.ResNet (BasicBlock): conv weights, BN weight+bias,
  conv1x1+BN downsample where the shape changes, Linear heads, bias-free query/key."""
  n = (depth - 2) // 6
  conv = lambda cin, cout, k=3: cin * cout * k * k
  bn = lambda c: 2 * c

  def stage(cin, c, stride):
    total = 0
    for i in range(n):
      inp = cin if i == 0 else c
      total += conv(inp, c) + bn(c) + conv(c, c) + bn(c)
      if i == 0 and (stride != 1 or inp != c):
        total += conv(inp, c, 1) + bn(c)
    return total
  trunk = conv(3, 16) + bn(16) + stage(16, 16, 1) + stage(16, 32, 2)
  branch = stage(32, 64, 2) + 64 * classes + classes
  return trunk + branches * branch + 2 * 64 * (64 // factor)


def test_parameter_count_matches_paper():
  model = okddip.create_okddip('resnet32', 7)
  v = jax.eval_shape(lambda k: model.init(k, jnp.zeros((2, 32, 32, 3))), jax.random.key(0))
  n = count(v['params'])
  assert n == reference_count(32, 7, 4) == 1530092
  assert round(n / 1e6, 2) == 1.53
  # The zoo name, as configs use it.
  zoo = models.create('okddip_resnet32', 7)
  assert models.param_count(jax.eval_shape(
      lambda k: zoo.init(k, jnp.zeros((2, 32, 32, 3))), jax.random.key(0))) == 1530092
  assert zoo.spec().arch == 'okddip_resnet32'
  with pytest.raises(ValueError, match='unsupported base'):
    models.create('okddip_wrn_16_2', 7)


@pytest.mark.slow
def test_attention_targets_and_features():
  model = okddip.create_okddip('resnet8', 5, branches=4)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8, 8, 1)), jnp.float32)
  v = jax.jit(model.init)(jax.random.key(0), x)
  logits, f = jax.jit(model.apply)(v, x)
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(f['branch3/logits']))
  # t_i = sum_j softmax_j(q_i . k_j) z_j over the 3 peers, in float64 numpy.
  p = v['params']
  h = np.stack([np.float64(f[f'branch{i}/pooled']) for i in range(3)], 1)
  q = h @ np.float64(p['query_weight']['kernel'])
  k = h @ np.float64(p['key_weight']['kernel'])
  e = np.einsum('npd,nqd->npq', q, k)
  a = np.exp(e - e.max(-1, keepdims=True))
  a /= a.sum(-1, keepdims=True)
  z = np.stack([np.float64(f[f'branch{i}/logits']) for i in range(3)], 1)
  np.testing.assert_allclose(np.asarray(f['peers/attention']), a, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(f['peers/targets']), np.einsum('npq,nqk->npk', a, z),
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='branches >= 3'):
    okddip.create_okddip('resnet8', 5, branches=2)


def np_kl(z, t, T):
  def softmax(x):
    x = x - x.max(1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(1, keepdims=True)
  q = softmax(np.float64(t) / T) + 1e-7
  return T * T * np.sum(q * (np.log(q) - np.log(softmax(np.float64(z) / T)))) / z.shape[0]


def test_okddip_loss_reference_value_and_gradient_into_targets():
  rng = np.random.default_rng(1)
  peers = [rng.normal(size=(4, 6)).astype(np.float32) for _ in range(3)]
  targets = rng.normal(size=(4, 3, 6)).astype(np.float32)
  leader = rng.normal(size=(4, 6)).astype(np.float32)
  labels = np.array([0, 5, 2, 2])
  got, metrics = method.okddip_loss(peers, targets, leader, labels, kl_weight=0.3,
                                    temperature=3.0)
  ce = sum(-np.mean(np.float64(z)[np.arange(4), labels]
                    - np.log(np.exp(np.float64(z)).sum(1))) for z in peers)
  group = sum(np_kl(z, targets[:, i], 3.0) for i, z in enumerate(peers))
  lead = np_kl(leader, np.mean(np.stack(peers, -1), -1), 3.0)
  np.testing.assert_allclose(float(got), ce + 0.3 * (group + lead), rtol=2e-5)
  np.testing.assert_allclose(float(metrics['leader_kl']), lead, rtol=2e-5)
  # The official targets are not detached: the aggregation is trained through them.
  g = jax.grad(lambda t: method.okddip_loss(peers, t, leader, labels, kl_weight=1.0)[0])(
      jnp.asarray(targets))
  assert np.abs(np.asarray(g)).max() > 0


def test_okddip_kl_zero_at_equal_and_rampup():
  z = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
  # Only the 1e-7 added to q separates it from 0.
  assert abs(float(method.okddip_kl(z, z))) < 1e-4
  w = lambda e: float(method.consistency_weight(jnp.asarray(e), 80.0))
  assert w(0.0) == pytest.approx(np.exp(-5.0)) and w(40.7) == pytest.approx(np.exp(-1.25))
  assert w(80.0) == 1.0 and w(200.0) == 1.0
  assert float(method.consistency_weight(jnp.asarray(0.0), 0.0)) == 1.0


@pytest.mark.slow
def test_okddip_trains_a_few_steps():
  model = models.create('okddip_resnet8', 10)
  x = jnp.asarray(np.random.default_rng(3).normal(size=(16, 8, 8, 1)), jnp.float32)
  y = jnp.arange(16, dtype=jnp.int32) % 10
  v = jax.jit(lambda k: model.init(k, x))(jax.random.key(0))
  shapes = jax.eval_shape(lambda: model.apply(v, x)[1])
  info = api.BuildInfo(shapes, None, 10, 16, student_spec=model.spec())
  (term,) = api.resolve_terms([dict(method='okddip', rampup_epochs=0.0)], info)
  ctx0 = api.example_context(info, batch=16)
  tx = optax.sgd(0.1, momentum=0.9, nesterov=True)

  @jax.jit
  def step(params, stats, opt):
    def loss_fn(params):
      logits, feats = model.apply({'params': params, 'batch_stats': stats}, x, train=True,
                                  mutable=['batch_stats'])[0]
      ctx = dataclasses.replace(ctx0, student=feats, labels=y, train=True)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      value, _, _ = term.loss({}, ctx)
      return ce + term.weight * value
    loss, g = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, loss, g
  params, opt = v['params'], tx.init(v['params'])
  losses = []
  for _ in range(3):
    params, opt, loss, g = step(params, v['batch_stats'], opt)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses))
  assert np.abs(np.asarray(g['query_weight']['kernel'])).max() > 0
  with pytest.raises(ValueError, match='OKDDip student'):
    method.build_okddip(api.BuildInfo({'logits': shapes['logits']}, None, 10, 16))
