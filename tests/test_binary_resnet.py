"""Binary ResNet students: STE gradients, exact binary arithmetic, parameter counts, training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax.models import binary_resnet as B


def test_sign_ste_values_and_gradients():
  x = jnp.asarray([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
  np.testing.assert_array_equal(np.asarray(B.sign_ste(x)), [-1, -1, -1, 1, 1, 1, 1])
  np.testing.assert_array_equal(np.asarray(jax.grad(lambda v: jnp.sum(B.sign_ste(v) * 3.0))(x)),
                                [0, 3, 3, 3, 3, 3, 0])
  np.testing.assert_array_equal(
      np.asarray(jax.grad(lambda v: jnp.sum(B.sign_identity(v) * 3.0))(x)), [3.0] * 7)


def test_binary_conv_is_sign_conv_times_rank1_scale():
  rng = np.random.default_rng(0)
  x = np.where(rng.normal(size=(2, 5, 5, 3)) > 0, 1.0, -1.0).astype(np.float32)
  conv = B.BinaryConv(4, 3, 2)
  v = conv.init(jax.random.key(0), x)
  p = dict(v['params'])
  p['alpha'], p['beta'], p['gamma'] = (jnp.asarray(rng.normal(size=s), jnp.float32)
                                       for s in ((4,), (3,), (3,)))
  got = np.asarray(conv.apply({'params': p}, x))
  # float64 reference: zero-padded strided correlation of the +-1 maps, then the scale.
  w = np.where(np.asarray(p['kernel']) >= 0, 1.0, -1.0)
  xp = np.pad(np.float64(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  ref = np.zeros((2, 3, 3, 4))
  for i in range(3):
    for j in range(3):
      patch = xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
      ref[:, i, j] = np.einsum('nhwc,hwco->no', patch, w)
  assert np.all(ref == np.round(ref))  # integer counts of agreeing signs
  scale = (np.float64(p['beta'])[:, None, None] * np.float64(p['gamma'])[None, :, None]
           * np.float64(p['alpha'])[None, None, :])
  np.testing.assert_allclose(got, ref * scale, rtol=1e-5, atol=1e-5)


def reference_count(sizes, classes, spatial, stem=(7, 3)):
  """Parameters from the definition in the module docstring."""
  k, cin = stem
  n = k * k * cin * 64 + 2 * 64
  c = 64
  for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), sizes)):
    hw = spatial[stage]
    for i in range(blocks):
      for unit in range(2):
        n += 2 * c + 9 * c * planes + planes + 2 * hw + planes  # BN, conv, alpha, beta+gamma, PReLU
        if c != planes:
          n += c * planes + 2 * planes
        c = planes
  return n + 2 * 512 + 512 * classes + classes


@pytest.mark.parametrize('depth,cifar,size,spatial', [
    (18, False, 224, (56, 28, 14, 7)),
    (34, True, 32, (32, 16, 8, 4)),
])
def test_parameter_counts(depth, cifar, size, spatial):
  classes = 1000 if not cifar else 100
  model = B.binary_resnet(depth, classes, cifar=cifar)
  shape = (1, size, size, 3)
  v = jax.eval_shape(lambda key: model.init(key, jnp.zeros(shape)), jax.random.key(0))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(v['params']))
  assert n == reference_count(B._SIZES[depth], classes, spatial,
                              stem=(3, 3) if cifar else (7, 3))


@pytest.mark.slow
def test_binary_resnet_trains_a_few_steps():
  model = B.BinaryResNet((1, 1, 1, 1), 10, cifar=True)  # one block per stage: a fast compile
  x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 8, 8, 1)), jnp.float32)
  y = jnp.arange(16, dtype=jnp.int32) % 10
  v = jax.jit(lambda key: model.init(key, x))(jax.random.key(0))
  tx = optax.adam(2e-3)

  @jax.jit
  def step(params, stats, opt):
    def loss_fn(params):
      (logits, _), new = model.apply({'params': params, 'batch_stats': stats}, x, train=True,
                                     mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new
    (loss, new), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), new['batch_stats'], opt, loss
  params, stats, opt = v['params'], v['batch_stats'], tx.init(v['params'])
  losses = []
  for _ in range(3):
    params, stats, opt, loss = step(params, stats, opt)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses))
  moved = (params['layer2_0_unit1']['conv']['kernel']
           - v['params']['layer2_0_unit1']['conv']['kernel'])
  assert np.abs(np.asarray(moved)).max() > 0
  with pytest.raises(ValueError, match='depth'):
    B.binary_resnet(50, 10)


@pytest.mark.parametrize('name,cifar,size', [('binary_resnet18', False, 64),
                                             ('binary_resnet34', False, 64),
                                             ('binary_resnet34_cifar', True, 32)])
def test_registered_and_features_match_the_spec(name, cifar, size):
  from kdjax import models
  assert name in models.names()
  model = models.create(name, 100)
  assert model.cifar == cifar and model.spec().arch == name
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  v = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  logits, feats = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), v, x)
  assert logits.shape == (2, 100)
  assert set(feats) == set(model.spec().feature_names) | {'logits'}  # as every model
  assert feats['pooled'].shape == (2, 512) and feats['last_map'].shape == feats['stage4'].shape
  # Every parameter belongs to the stem, one stage, or the final BN / head.
  from kdjax.models.spec import names_regex  # noqa: F401
  import re
  paths = ['/'.join(str(getattr(k, 'key', k)) for k in p)
           for p, _ in jax.tree_util.tree_flatten_with_path(v['params'])[0]]
  stage_re = [re.compile(r) for rs in model.spec().stage_params for r in rs]
  loose = {p.split('/')[0] for p in paths if not any(r.search(p) for r in stage_re)}
  assert loose == {'bn_final', 'head'}


def test_adam_option_is_pytorch_adam_with_coupled_l2():
  """optim.name='adam': torch.optim.Adam (L2 added to the gradient, bias-corrected moments,
  eps outside the root), against a float64 numpy re-implementation, 3 steps."""
  from kdjax import config as config_lib
  from kdjax.train import optim
  o = config_lib.ConfigDict(config_lib.base_config().optim.to_dict())
  o.update(name='adam', lr=0.002, weight_decay=1e-4, schedule='constant')
  rng = np.random.default_rng(0)
  p0 = rng.normal(size=(4,))
  params = {'student': {'w': jnp.asarray(p0, jnp.float32)}, 'aux': {}}
  tx = optim.make_tx(o, optim.learning_rate(o, 1, 1), params)
  state, p = tx.init(params), params
  ref, m, v = p0.copy(), np.zeros(4), np.zeros(4)
  for t in range(1, 4):
    g = rng.normal(size=(4,))
    gd = g + 1e-4 * ref
    m = 0.9 * m + 0.1 * gd
    v = 0.999 * v + 0.001 * gd ** 2
    ref = ref - 0.002 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    u, state = tx.update({'student': {'w': jnp.asarray(g, jnp.float32)}, 'aux': {}}, state, p)
    p = optax.apply_updates(p, u)
  np.testing.assert_allclose(np.asarray(p['student']['w']), ref, rtol=1e-6, atol=1e-7)
  assert not np.allclose(ref, p0, atol=1e-3)
