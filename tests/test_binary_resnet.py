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
