"""kdjax.models.winograd: F(2x2, 3x3) convs equal lax's direct conv, and apply exactly where documented."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from kdjax.models import grads, winograd

_DN = ('NHWC', 'HWIO', 'NHWC')
_PAD1 = ((1, 1), (1, 1))


def _direct(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), _PAD1, dimension_numbers=_DN)


def _kdjax(x, w):
  return grads.conv_general_dilated(x, w, (1, 1), _PAD1, dimension_numbers=_DN)


def _data(n, h, w, c, o, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(n, h, w, c)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, c, o)) / np.sqrt(9 * c), jnp.float32)
  return x, k


@pytest.mark.parametrize('n,h,w,c,o', [(2, 8, 8, 128, 128), (1, 4, 6, 3, 5), (3, 2, 2, 16, 8),
                                       (2, 6, 4, 130, 256)])
def test_conv3x3_equals_the_direct_conv(n, h, w, c, o):
  x, k = _data(n, h, w, c, o)
  want = _direct(x, k)
  got = jax.jit(winograd.conv3x3)(x, k)
  assert got.shape == want.shape
  # Only float32 rounding differs: the transforms' coefficients are exact in binary.
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * float(jnp.max(jnp.abs(want))))
  # flipped: the kernel flipped in space, I/O swapped (an input gradient's conv), read as is.
  y, _ = _data(n, h, w, o, 1, seed=1)
  want = _direct(y, jnp.flip(k, (0, 1)).transpose(0, 1, 3, 2))
  got = jax.jit(lambda y, k: winograd.conv3x3(y, k, flipped=True))(y, k)
  assert got.shape == (n, h, w, c)
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * float(jnp.max(jnp.abs(want))))


def test_conv3x3_of_one_tile_by_hand():
  # A 2x2 map with one channel: out[p, q] = sum over the 3x3 window of the zero-padded x.
  x = jnp.asarray([[1., 2.], [3., 4.]]).reshape(1, 2, 2, 1)
  k = jnp.ones((3, 3, 1, 1), jnp.float32)
  np.testing.assert_allclose(winograd.conv3x3(x, k).reshape(2, 2), [[10., 10.], [10., 10.]])
  k = jnp.zeros((3, 3, 1, 1), jnp.float32).at[0, 0].set(1.)   # picks x[p - 1, q - 1]
  np.testing.assert_allclose(winograd.conv3x3(x, k).reshape(2, 2), [[0., 0.], [0., 1.]])


def test_applies_only_where_documented(monkeypatch):
  f32, bf16 = jnp.float32, jnp.bfloat16
  base = dict(x_shape=(8, 8, 8, 128), w_shape=(3, 3, 128, 256), strides=(1, 1), padding=_PAD1,
              groups=1, x_dtype=f32, w_dtype=f32)
  assert winograd.applies(**base)
  for change in (dict(w_shape=(1, 1, 128, 256)), dict(w_shape=(5, 5, 128, 256)), dict(strides=(2, 2)),
                 dict(padding=((0, 0), (0, 0))), dict(padding=((1, 1), (2, 2))), dict(groups=2),
                 dict(x_shape=(8, 7, 8, 128)), dict(x_shape=(8, 8, 9, 128)),
                 dict(w_shape=(3, 3, 64, 256)), dict(w_shape=(3, 3, 128, 64)),
                 dict(x_dtype=bf16), dict(w_dtype=bf16)):
    assert not winograd.applies(**{**base, **change}), change
  monkeypatch.setenv('KDJAX_CPU_WINOGRAD', '0')
  assert not winograd.applies(**base)


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='the Winograd path is CPU-only')
def test_kdjax_conv_uses_it_and_its_gradients_equal_lax(monkeypatch):
  x, k = _data(2, 4, 4, 128, 128, seed=1)
  g = jnp.asarray(np.random.default_rng(2).normal(size=(2, 4, 4, 128)), jnp.float32)

  want_y, vjp = jax.vjp(_direct, x, k)
  want_dx, want_dw = vjp(g)
  y, vjp = jax.vjp(jax.jit(_kdjax), x, k)
  dx, dw = vjp(g)
  for got, want in ((y, want_y), (dx, want_dx), (dw, want_dw)):
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * float(jnp.max(jnp.abs(want))))
  # The forward and the input gradient are Winograd's (not bit-equal to lax), the filter
  # gradient is XLA's conv: bit-equal.
  assert not np.array_equal(y, want_y) and not np.array_equal(dx, want_dx)
  np.testing.assert_array_equal(y, winograd.conv3x3(x, k))
  np.testing.assert_array_equal(dw, want_dw)
  monkeypatch.setenv('KDJAX_CPU_WINOGRAD', '0')   # read when tracing: a function not traced yet
  np.testing.assert_array_equal(jax.jit(lambda x, k: _kdjax(x, k))(x, k), jax.jit(_direct)(x, k))


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='the Winograd path is CPU-only')
def test_seed_group_weights_give_each_seed_its_single_run_conv():
  x, _ = _data(2, 4, 4, 128, 128, seed=3)
  ks = jnp.stack([_data(1, 2, 2, 128, 128, seed=s)[1] for s in (4, 5)])
  xs = jnp.stack([x, x + 1])

  got = jax.jit(jax.vmap(_kdjax))(xs, ks)
  for i in range(2):
    np.testing.assert_array_equal(got[i], jax.jit(_kdjax)(xs[i], ks[i]))
