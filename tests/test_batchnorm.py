"""kdjax's BatchNorm against PyTorch's rule: two-pass variance, optional unbiased running variance."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import models
from kdjax.models import common

from bn_reference import numpy_bn_train


@pytest.mark.parametrize('unbiased', [False, True])
def test_two_train_steps_match_the_numpy_reference(unbiased):
  rng = np.random.default_rng(0)
  bn = common.BatchNorm(use_running_average=False, unbiased_running_var=unbiased)
  x0 = rng.normal(2.0, 3.0, (4, 3, 5, 6)).astype(np.float32)
  variables = bn.init(jax.random.key(0), x0)
  params = {'scale': jnp.asarray(rng.uniform(0.5, 2, 6), jnp.float32),
            'bias': jnp.asarray(rng.normal(size=6), jnp.float32)}
  stats = variables['batch_stats']
  np.testing.assert_array_equal(stats['mean'], np.zeros(6))   # init does not update
  ref_mean, ref_var = np.zeros(6), np.ones(6)
  for step in range(2):
    x = rng.normal(-1.0 + step, 0.5 + step, (4, 3, 5, 6)).astype(np.float32)
    y, new = bn.apply({'params': params, 'batch_stats': stats}, x, mutable=['batch_stats'])
    stats = new['batch_stats']
    ref_y, ref_mean, ref_var = numpy_bn_train(x, np.asarray(params['scale']),
                                               np.asarray(params['bias']), ref_mean, ref_var,
                                               unbiased=unbiased)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats['mean'], ref_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats['var'], ref_var, rtol=1e-6)
  # Eval mode uses the running statistics.
  x = rng.normal(size=(2, 3, 5, 6)).astype(np.float32)
  bn_eval = common.BatchNorm(use_running_average=True, unbiased_running_var=unbiased)
  y = bn_eval.apply({'params': params, 'batch_stats': stats}, x)
  ref = (x - ref_mean) / np.sqrt(ref_var + 1e-5) * np.asarray(params['scale']) + np.asarray(params['bias'])
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_unbiased_running_var_equals_torch_batchnorm2d():
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(1)
  x = rng.normal(3.0, 2.0, (2, 4, 4, 5)).astype(np.float32)   # n = 32: n/(n-1) = 1.032
  tbn = torch.nn.BatchNorm2d(5).train()
  ty = tbn(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
  bn = common.BatchNorm(use_running_average=False, unbiased_running_var=True)
  v = bn.init(jax.random.key(0), x)
  y, new = bn.apply(v, x, mutable=['batch_stats'])
  np.testing.assert_allclose(y, ty, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(new['batch_stats']['var'], tbn.running_var.numpy(), rtol=1e-6)
  np.testing.assert_allclose(new['batch_stats']['mean'], tbn.running_mean.numpy(), rtol=1e-6)


def test_two_pass_variance_survives_a_mean_of_1000_std():
  """mean = 1000 std: the one-pass E[x^2] - E[x]^2 form fails, the two-pass one does not."""
  rng = np.random.default_rng(2)
  x = (1000.0 + rng.normal(size=(8, 4, 4, 3))).astype(np.float32)
  ref, _, _ = numpy_bn_train(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), unbiased=False)
  bn = common.BatchNorm(use_running_average=False)
  y, _ = bn.apply(bn.init(jax.random.key(0), x), x, mutable=['batch_stats'])
  # float32 resolves 1000 + x to ~6e-5; the normalised output keeps ~1e-4 of it.
  assert np.abs(np.asarray(y) - ref).max() < 1e-3
  fast = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, use_fast_variance=True)
  y_fast, _ = fast.apply(fast.init(jax.random.key(0), x), x, mutable=['batch_stats'])
  assert np.abs(np.asarray(y_fast) - ref).max() > 0.1   # the failure the two-pass form avoids


@pytest.mark.slow
def test_model_override_gives_the_unbiased_running_var():
  """Same forward; every BN's running-var update differs by exactly n/(n-1), n = B H W there."""
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  out = {}
  for unbiased in (False, True):
    m = models.create('resnet8', 10, bn_unbiased_running_var=unbiased)
    v = jax.jit(lambda x: m.init(jax.random.key(1), x, train=False))(x)
    (logits, _), new = jax.jit(lambda v, x: m.apply(v, x, train=True, mutable=['batch_stats']))(v, x)
    out[unbiased] = logits, new['batch_stats']
  np.testing.assert_array_equal(out[False][0], out[True][0])
  for path, n in ((('bn1',), 2 * 8 * 8), (('layer2_0', 'bn2'), 2 * 4 * 4),
                  (('layer3_0', 'shortcut_bn'), 2 * 2 * 2)):
    biased, unb = out[False][1], out[True][1]
    for p in path:
      biased, unb = biased[p], unb[p]
    np.testing.assert_allclose((unb['var'] - 0.9) / (biased['var'] - 0.9), n / (n - 1), rtol=1e-4)
    np.testing.assert_array_equal(unb['mean'], biased['mean'])
  with pytest.raises(ValueError, match='bad overrides'):
    models.create('resnet8', 10, bn_unbiased=True)
