"""Means over the valid rows of a masked batch (`data.drop_remainder=False`).

Synopsis:
  row_mean(x)                 [N, ...] -> [N]: each sample's mean over its other axes
  masked_mean(x, mask)        mean over the valid rows (and every other axis) of x [N, ...]
  valid_count(mask, n)        the number of valid rows (n when mask is None)
  pair_weights(mask)          [N, N] weights m_i m_j of the pairs of valid rows

`mask` is None (every row valid) or a 0/1 (or bool) vector [N]; a masked
mean equals the plain mean of the valid rows alone, so a batch padded to a
fixed shape trains exactly as its valid rows would.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def row_mean(x: Array) -> Array:
  """[N, ...] -> [N]: the mean of each sample over all its other axes (float32)."""
  x = jnp.asarray(x, jnp.float32)
  return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def valid_count(mask: Array | None, n: int) -> Array:
  """sum(mask) as float32 (n when mask is None)."""
  if mask is None:
    return jnp.asarray(float(n), jnp.float32)
  return jnp.sum(jnp.asarray(mask, jnp.float32))


def masked_mean(x: Array, mask: Array | None) -> Array:
  """mean of x [N, ...] over the valid rows and all other axes; jnp.mean(x) when mask is None."""
  if mask is None:
    return jnp.mean(x)
  m = jnp.asarray(mask, jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
  per_row = float(x[0].size) if x.ndim > 1 else 1.0
  return jnp.sum(x * m) / (jnp.maximum(jnp.sum(m), 1.0) * per_row)


def pair_weights(mask: Array) -> Array:
  """[N, N] with m_i m_j: 1 where both rows are valid."""
  m = jnp.asarray(mask, jnp.float32)
  return m[:, None] * m[None, :]
