"""3x3 convolutions on CPU by Winograd's minimal filtering, F(2x2, 3x3).

Synopsis:
  if winograd.applies(x.shape, w.shape, strides, pads, groups, x.dtype, w.dtype):
    y = winograd.conv3x3(x, w)      # == lax conv, NHWC / HWIO, stride 1, padding 1

Why: XLA:CPU runs a convolution as Eigen's image-patch packing plus a GEMM. On the
2-core AVX-512 CPU of benchmarks/README.md, a 3x3 conv over [64, 8, 8, 256] -> 256 took
27-28 ms (~175 GFLOP/s) against PyTorch's oneDNN direct conv's 22.6 ms (214 GFLOP/s),
and a plain GEMM of the same im2col shape reaches only ~130-150 GFLOP/s in either
library. No kernel reachable from JAX is faster, so the work has to shrink.

Formula (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). Each
2x2 output tile Y of a 3x3 correlation of the 4x4 input tile d with the kernel g is
    Y = A^T [ (G g G^T) * (B^T d B) ] A
where * is the element-wise product over the 4x4 "Winograd domain" and
    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].
Summed over input channels, the 16 element-wise products become 16 GEMMs
[tiles, C_in] x [C_in, C_out]: 16 multiplies per 4 outputs instead of 36 (4/9 of the
work). The transforms are additions (and halvings of the kernel), which XLA fuses into
a few memory passes. All coefficients are exact in binary, so the result differs from
the direct conv only by float32 rounding (3.8e-7 of the logits' scale for resnet32x4,
tests/test_winograd.py bounds a single conv at 2e-6).

When: float32, ungrouped, 3x3, stride 1, padding 1 on every side, even height and
width, and at least MIN_CHANNELS input and output channels. Below 128 channels a GEMM
with K = C_in and N = C_out does too few multiply-adds per byte to gain (a 32x32x64
conv: 57 ms Winograd vs 52 direct), and odd maps would waste a tile row. resnet32x4's
forward in eval mode (batch 64): 907-921 ms -> 748-761 ms (benchmarks/README.md).
`KDJAX_CPU_WINOGRAD=0` keeps XLA's own conv everywhere (e.g. to compare).
"""

from __future__ import annotations

import os

import jax.numpy as jnp
from jax import lax

MIN_CHANNELS = 128
ENV = 'KDJAX_CPU_WINOGRAD'


def enabled() -> bool:
  """False when KDJAX_CPU_WINOGRAD=0 (read when a conv is traced)."""
  return os.environ.get(ENV, '1') != '0'


def applies(x_shape, w_shape, strides, padding, groups: int, x_dtype, w_dtype) -> bool:
  """Whether `conv3x3` replaces an NHWC/HWIO conv with these (explicit) `padding` pairs."""
  return (enabled() and tuple(w_shape[:2]) == (3, 3) and tuple(strides) == (1, 1) and groups == 1
          and tuple(tuple(p) for p in padding) == ((1, 1), (1, 1))
          and x_shape[1] % 2 == 0 and x_shape[2] % 2 == 0
          and min(w_shape[2], w_shape[3]) >= MIN_CHANNELS
          and jnp.dtype(x_dtype) == jnp.float32 and jnp.dtype(w_dtype) == jnp.float32)


def _bt(z):   # B^T applied along one axis of a 4-tile
  return z[0] - z[2], z[1] + z[2], z[2] - z[1], z[1] - z[3]


def _g(z):    # G applied along one axis of the 3x3 kernel
  return z[0], (z[0] + z[1] + z[2]) * 0.5, (z[0] - z[1] + z[2]) * 0.5, z[2]


def _at(z):   # A^T applied along one axis of a 4x4 product
  return z[0] + z[1] + z[2], z[1] - z[2] - z[3]


def _outer(transform, grid, size):
  """transform applied along the first then the second index of grid[i][j]: a flat
  list over (u, v), u outer."""
  cols = [transform([grid[i][j] for i in range(len(grid))]) for j in range(len(grid[0]))]
  return [t for u in range(size) for t in transform([cols[j][u] for j in range(len(cols))])]


def conv3x3(x, w, *, flipped: bool = False):
  """lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1))) for NHWC x and HWIO w.

  flipped=True: the conv with w flipped in space and its I/O swapped, w[::-1, ::-1]
  transposed to [3, 3, O, I] (x has O channels): a conv's input gradient, with no
  transposed copy of w (a transposing read in the kernel transform doubled the time of
  a 4x4x512 input gradient).
  """
  n, h, wd, c = x.shape
  th, tw = h // 2, wd // 2
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  # d[i][j]: element (i, j) of every overlapping 4x4 input tile (tiles step by 2).
  d = [[xp[:, i:i + 2 * th - 1:2, j:j + 2 * tw - 1:2] for j in range(4)] for i in range(4)]
  v = jnp.stack(_outer(_bt, d, 4)).reshape(16, n * th * tw, c)
  taps = [[w[2 - i, 2 - j] if flipped else w[i, j] for j in range(3)] for i in range(3)]
  u = jnp.stack(_outer(_g, taps, 4))                       # [16, c, o], or [16, o', c] flipped
  m = lax.dot_general(v, u, (((2,), (2 if flipped else 1,)), ((0,), (0,))))
  m = m.reshape(4, 4, n, th, tw, m.shape[-1])
  rows = [_at([m[a, b] for a in range(4)]) for b in range(4)]                    # rows[b][i]
  y = [jnp.stack(_at([rows[b][i] for b in range(4)]), axis=3) for i in range(2)]  # [n, th, tw, 2, o]
  return jnp.stack(y, axis=2).reshape(n, h, wd, m.shape[-1])
