"""Mixed precision: `dtype=jnp.bfloat16` computes convs / dense layers in bf16, the rest in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import data, models


@pytest.fixture(scope='module')
def digits_batch():
  ds = data.load({'name': 'digits'})
  return (ds.train_images[:32].astype(np.float32) / 255 - ds.mean[0]) / ds.std[0]


def _rel(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))


@pytest.mark.parametrize('train', [True, False])
def test_bf16_resnet8_forward_stays_close_to_float32(digits_batch, train):
  """Relative L2 error of logits and every feature < 3e-2; measured 1.2e-2 (train) / 7e-3 (eval).

  bf16 rounds to 8 significant bits (unit roundoff u = 2^-9 ~ 2e-3). resnet8 has 7
  convolutions on the path to the logits plus the head; each rounds its inputs and
  weights (~2u relative each, independent, so they add roughly in quadrature over
  the ~16 roundings: ~4u sqrt(16) / 2 ~ 1e-2), which is what we measure. 3e-2 leaves
  headroom for other inits without hiding a real fault (a float16 overflow or a BN
  computed in bf16 gives errors of order 1). The lower bound checks bf16 is used.
  """
  x = digits_batch
  m32, m16 = models.create('resnet8', 10), models.create('resnet8', 10, dtype=jnp.bfloat16)
  v = m32.init(jax.random.key(0), x, train=False)

  def fwd(m):
    if train:
      return m.apply(v, x, train=True, mutable=['batch_stats'])[0]
    return m.apply(v, x, train=False)

  (l32, f32), (l16, f16) = fwd(m32), fwd(m16)
  assert l16.dtype == jnp.float32 and all(f.dtype == jnp.float32 for f in f16.values())
  assert set(f16) == set(f32)
  errors = {k: _rel(f32[k], f16[k]) for k in f32}
  assert max(errors.values()) < 3e-2, errors
  assert _rel(l32, l16) > 1e-4   # bf16 really computed the convolutions
  np.testing.assert_array_equal(jnp.argmax(l32, -1)[:8], jnp.argmax(l16, -1)[:8])


@pytest.mark.slow
def test_bf16_params_stats_and_grads_stay_float32(digits_batch):
  x = digits_batch[:8]
  m = models.create('resnet8', 10, dtype=jnp.bfloat16)
  v = m.init(jax.random.key(0), x, train=False)
  for leaf in jax.tree_util.tree_leaves(v):
    assert leaf.dtype == jnp.float32

  def loss(params):
    (logits, _), new = m.apply({**v, 'params': params}, x, train=True, mutable=['batch_stats'])
    return jnp.mean(jax.nn.logsumexp(logits, -1)), new

  jaxpr = str(jax.make_jaxpr(loss)(v['params']))
  assert 'conv_general_dilated' in jaxpr and 'bf16' in jaxpr
  grads, new = jax.grad(loss, has_aux=True)(v['params'])
  for leaf in jax.tree_util.tree_leaves((grads, new)):
    assert leaf.dtype == jnp.float32


def test_every_family_accepts_dtype():
  x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
  for name in ('wrn_10_1', 'vgg8', 'mobilenetv2', 'shufflenetv1', 'shufflenetv2', 'mobilenetv1',
               'resnet18_cifar', 'one_resnet8'):
    m = models.create(name, 10, dtype=jnp.bfloat16)
    v = jax.eval_shape(lambda x: m.init(jax.random.key(0), x, train=False), x)
    logits, feats = jax.eval_shape(lambda v, x: m.apply(v, x, train=False), v, x)
    assert logits.dtype == jnp.float32 and all(f.dtype == jnp.float32 for f in feats.values()), name
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(v)), name
