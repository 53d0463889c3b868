"""kdjax.models.initializers: flax's initial values, bit for bit, one program per size bucket."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from kdjax.models import initializers

# Conv kernels HWIO (a stem, a 1x1, a depthwise one, one over a bucket), a dense kernel, a bias.
# Few: flax compiles a threefry program for every shape (0.6 s each on 2 cores).
SHAPES = [(3, 3, 3, 16), (1, 1, 16, 32), (3, 3, 1, 64), (3, 3, 32, 32), (64, 100), (10,)]


KERNELS = [s for s in SHAPES if len(s) >= 2]   # variance scaling needs an in and an out axis


def _key(i):
  return jax.random.fold_in(jax.random.key(11), i)


@pytest.mark.parametrize('ours, flax_init, shapes', [
    (initializers.variance_scaling(2.0, 'fan_out', 'normal'),
     nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'), KERNELS),
    (initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'),
     nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'), KERNELS),
    (initializers.variance_scaling(1.0, 'fan_avg', 'normal'),
     nn.initializers.variance_scaling(1.0, 'fan_avg', 'normal'), KERNELS),
    # PyTorch's ConvTranspose fan (kdjax.distill.modules): in and out axes swapped.
    (initializers.variance_scaling(1 / 3, 'fan_in', 'uniform', in_axis=-1, out_axis=-2),
     nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform', in_axis=-1, out_axis=-2),
     KERNELS),
    (initializers.normal(0.01), nn.initializers.normal(0.01), SHAPES),
    (initializers.uniform(0.2), nn.initializers.uniform(0.2), SHAPES),
], ids=['kaiming_normal_fan_out', 'torch_linear_uniform', 'fan_avg_normal', 'transposed_axes',
        'normal', 'uniform'])
def test_values_equal_flax_bit_for_bit(ours, flax_init, shapes):
  for i, shape in enumerate(shapes):
    a, b = np.asarray(ours(_key(i), shape)), np.asarray(flax_init(_key(i), shape))
    assert a.shape == shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b, err_msg=str(shape))


def test_bucket_sizes():
  assert [initializers.bucket(n) for n in (1, 432, 4096, 4097, 36864, 589824)] == [
      4096, 4096, 4096, 8192, 65536, 1048576]


def _drawn_shapes(monkeypatch):
  drawn = []
  normal = jax.random.normal

  def record(key, shape, dtype=float):
    drawn.append(tuple(shape))
    return normal(key, shape, dtype)
  monkeypatch.setattr(jax.random, 'normal', record)
  return drawn


def test_one_bucket_one_program(monkeypatch):
  # 3x3x16x16 (2304 values) and 3x3x16x32 (4608) draw 4096 and 8192 values: every parameter
  # of a bucket calls the same jitted jax.random.normal shape, so it compiles once.
  drawn = _drawn_shapes(monkeypatch)
  init = initializers.variance_scaling(2.0, 'fan_out', 'normal')
  for i, shape in enumerate([(3, 3, 16, 16), (3, 3, 3, 16), (3, 3, 16, 32), (1, 1, 32, 64)]):
    init(_key(i), shape)
  assert drawn == [(4096,), (4096,), (8192,), (4096,)]


def test_without_partitionable_threefry_it_draws_the_shape_itself(monkeypatch):
  # The prefix property needs partitionable threefry; without it the values stay flax's.
  drawn = _drawn_shapes(monkeypatch)
  ours = initializers.variance_scaling(2.0, 'fan_out', 'normal')
  with jax.threefry_partitionable(False):
    a = np.asarray(ours(_key(0), (3, 3, 16, 32)))
    flax_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
    b = np.asarray(flax_init(_key(0), (3, 3, 16, 32)))
  assert drawn[0] == (3, 3, 16, 32)
  np.testing.assert_array_equal(a, b)


def test_unsupported_distribution_is_refused():
  with pytest.raises(ValueError, match='truncated_normal'):
    initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')


def test_another_prng_draws_the_shape_itself(monkeypatch):
  drawn = _drawn_shapes(monkeypatch)
  key = jax.random.key(0, impl='rbg')
  a = np.asarray(initializers.normal(0.1)(key, (3, 3, 4, 8)))
  np.testing.assert_array_equal(a, np.asarray(nn.initializers.normal(0.1)(key, (3, 3, 4, 8))))
  assert drawn[0] == (3, 3, 4, 8)
