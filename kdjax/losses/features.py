"""Primitives on feature maps shared by several methods (pure functions).

Synopsis:
  l2_normalize(x, axis)            torch `F.normalize` with finite gradients at 0
  adaptive_avg_pool_to(x, size)    torch adaptive average pooling of an NHWC map
  match_spatial(a, b)              pool the larger of two maps to the other's H x W (RD)
  attention_map(f, p)              AT's normalize(flatten(mean_c |F|^p)) (AT, FT, IE-KD)
  flat(x), f32(x)                  [N, -1] float32 view; float32 cast
  check_sequences / check_embeddings   argument checks of multi-layer / relational losses

Feature maps are NHWC. Method losses live in `kdjax.distill.methods.<method>`.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's default


def l2_normalize(x: Array, axis: int = -1, eps: float = NORMALIZE_EPS) -> Array:
  """x / max(||x||, eps) along `axis` (torch `F.normalize`), with finite gradients at 0."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x / jnp.sqrt(jnp.maximum(sq, eps * eps))


def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] averaging matrix of PyTorch's adaptive average pooling."""
  m = np.zeros((n_out, n_in), np.float32)
  for k in range(n_out):
    start = (k * n_in) // n_out
    end = -((-(k + 1) * n_in) // n_out)  # ceil
    m[k, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool_to(x: Array, size: tuple[int, int]) -> Array:
  """Adaptive average pooling of an NHWC map to spatial `size` (torch semantics).

  Bin k of an axis of length n_in covers [floor(k n_in / n_out), ceil((k+1) n_in / n_out)).

  Args:
    x: [N, H, W, C].
    size: (H_out, W_out), each at most the input's.

  Returns:
    [N, H_out, W_out, C].
  """
  chex.assert_rank(x, 4)
  h, w = x.shape[1:3]
  ho, wo = size
  if (h, w) == (ho, wo):
    return x
  if ho > h or wo > w:
    raise ValueError(f'adaptive_avg_pool_to: cannot pool {(h, w)} up to {(ho, wo)}.')
  ph = jnp.asarray(_pool_matrix(h, ho), x.dtype)
  pw = jnp.asarray(_pool_matrix(w, wo), x.dtype)
  return jnp.einsum('ph,qw,nhwc->npqc', ph, pw, x)


def match_spatial(a: Array, b: Array) -> tuple[Array, Array]:
  """Pool the spatially larger of two NHWC maps down to the other's H x W (RD)."""
  chex.assert_rank([a, b], 4)
  ha, wa = a.shape[1:3]
  hb, wb = b.shape[1:3]
  if (ha, wa) == (hb, wb):
    return a, b
  if ha >= hb and wa >= wb:
    return adaptive_avg_pool_to(a, (hb, wb)), b
  if hb >= ha and wb >= wa:
    return a, adaptive_avg_pool_to(b, (ha, wa))
  raise ValueError(f'match_spatial: neither map {(ha, wa)} nor {(hb, wb)} is larger in both '
                   'dimensions.')


def check_sequences(student_feats, teacher_feats, name: str, rank: int = 4):
  """Two equally long, non-empty sequences of rank-`rank` maps with equal batch sizes."""
  if isinstance(student_feats, (jax.Array, np.ndarray)) or isinstance(
      teacher_feats, (jax.Array, np.ndarray)):
    raise TypeError(f'{name} takes sequences of feature maps; wrap a single map in a list.')
  if len(student_feats) != len(teacher_feats) or not student_feats:
    raise ValueError(f'{name}: got {len(student_feats)} student and {len(teacher_feats)} '
                     'teacher features; need the same non-zero number.')
  for s, t in zip(student_feats, teacher_feats):
    chex.assert_rank([s, t], rank)
    chex.assert_equal_shape_prefix([s, t], 1)  # same batch


def f32(x) -> Array:
  """`x` as a float32 array (losses are computed in float32)."""
  return jnp.asarray(x).astype(jnp.float32)


def flat(x: Array) -> Array:
  """[N, ...] -> [N, prod(...)] in float32 (RepDistiller: view(N, -1))."""
  return x.reshape(x.shape[0], -1).astype(jnp.float32)


def check_embeddings(s: Array, t: Array):
  """Per-sample features of rank 2-4 with equal batch sizes."""
  chex.assert_rank([s, t], {2, 3, 4})
  chex.assert_equal_shape_prefix([s, t], 1)


def attention_map(f: Array, p: float = 2) -> Array:
  """AT map: L2-normalised flatten_HW(mean_c |F|^p) -> [N, H*W]."""
  chex.assert_rank(f, 4)
  a = jnp.mean(jnp.abs(f32(f)) ** p, axis=-1)
  return l2_normalize(a.reshape(a.shape[0], -1))
