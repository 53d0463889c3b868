"""Parameter initialisers that give flax's values but compile once per size bucket.

Outside `jit` (where `setup.init_variables` runs `model.init`), every `jax.random.normal(key,
shape)` compiled a threefry program for its own shape: 0.6 s each on a 2-core CPU, so resnet8's
init took 8.4 s in a fresh process (4.3 s with these). With partitionable threefry (JAX's
default) the random bits of element i depend only on the key and on i, not on the shape, so the
first n values of `normal(key, (m,))` are those of `normal(key, (n,))` for any m >= n. These
initialisers draw `(bucket(n),)` values (a power of two) and keep the first n, so every
parameter of a size bucket runs the same compiled program. The values are flax's, bit for bit
(tests/test_initializers.py). With threefry not partitionable, or another PRNG, the prefix
property does not hold, and they draw the shape itself.

  variance_scaling(scale, mode, distribution, in_axis=-2, out_axis=-1)
                                  as nn.initializers.variance_scaling ('normal' or 'uniform')
  normal(stddev), uniform(scale)  as nn.initializers.normal / uniform
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

MIN_BUCKET = 4096


def bucket(n: int) -> int:
  """The number of values drawn for a parameter of n elements."""
  return max(MIN_BUCKET, 1 << (n - 1).bit_length())


def _prefix_holds(key) -> bool:
  return jax.config.jax_threefry_partitionable and str(jax.random.key_impl(key)) == 'threefry2x32'


def _draw(sample, key, shape, dtype):
  """sample(key, shape) for an elementwise distribution, drawn as a prefix of a bucket."""
  shape = tuple(shape)
  n = math.prod(shape)
  if not _prefix_holds(key) or n == 0:
    return sample(key, shape, dtype)
  return sample(key, (bucket(n),), dtype)[:n].reshape(shape)


def _uniform_pm1(key, shape, dtype):
  return jax.random.uniform(key, shape, dtype, -1)


def variance_scaling(scale: float, mode: str, distribution: str, in_axis: int = -2,
                     out_axis: int = -1):
  """nn.initializers.variance_scaling(scale, mode, distribution, in_axis, out_axis) for the
  'normal' and 'uniform' distributions (the defaults read conv kernels HWIO and dense kernels
  [in, out])."""
  if distribution not in ('normal', 'uniform') or mode not in ('fan_in', 'fan_out', 'fan_avg'):
    raise ValueError(f'variance_scaling: {mode!r} / {distribution!r} is not implemented here.')

  def init(key, shape, dtype=jnp.float32):
    shape = tuple(shape)
    i, o = in_axis % len(shape), out_axis % len(shape)
    receptive = math.prod(d for k, d in enumerate(shape) if k not in (i, o))
    fan_in, fan_out = shape[i] * receptive, shape[o] * receptive
    denominator = {'fan_in': fan_in, 'fan_out': fan_out, 'fan_avg': (fan_in + fan_out) / 2}[mode]
    # As jax.nn.initializers computes it: the variance in dtype, then its square root.
    variance = jnp.array(scale / denominator, dtype=dtype)
    if distribution == 'normal':
      return _draw(jax.random.normal, key, shape, dtype) * jnp.sqrt(variance)
    return _draw(_uniform_pm1, key, shape, dtype) * jnp.sqrt(3 * variance)
  return init


def normal(stddev: float = 1e-2):
  """nn.initializers.normal(stddev)."""
  def init(key, shape, dtype=jnp.float32):
    return _draw(jax.random.normal, key, shape, dtype) * jnp.array(stddev, dtype)
  return init


def uniform(scale: float = 1e-2):
  """nn.initializers.uniform(scale): U[0, scale)."""
  def init(key, shape, dtype=jnp.float32):
    return _draw(jax.random.uniform, key, shape, dtype) * jnp.array(scale, dtype)
  return init
