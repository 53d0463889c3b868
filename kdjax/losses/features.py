"""Feature-map distillation losses (AT, NST, FSP) as pure functions.

Synopsis:
  Feature maps are NHWC. Losses over several layers take two sequences
  (student, teacher) and return the SUM over pairs. Where a student map and
  its teacher map differ in spatial size, the larger is adaptive-average-pooled
  to the smaller, as RepDistiller does (`match_spatial`). Teacher maps are
  wrapped in `stop_gradient`. Norms are guarded so all-zero maps give finite
  losses and gradients.

      loss = attention([s1, s2, s3], [t1, t2, t3])        # weight 1000 in RD
"""

from __future__ import annotations

from typing import Sequence

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


def _check_seqs(student_feats, teacher_feats, name: str, rank: int = 4):
  if isinstance(student_feats, (jax.Array, np.ndarray)) or isinstance(
      teacher_feats, (jax.Array, np.ndarray)):
    raise TypeError(f'{name} takes sequences of feature maps; wrap a single map in a list.')
  if len(student_feats) != len(teacher_feats) or not student_feats:
    raise ValueError(f'{name}: got {len(student_feats)} student and {len(teacher_feats)} '
                     'teacher features; need the same non-zero number.')
  for s, t in zip(student_feats, teacher_feats):
    chex.assert_rank([s, t], rank)
    chex.assert_equal_shape_prefix([s, t], 1)  # same batch


def _f32(x):
  return x.astype(jnp.float32)


def attention_map(f: Array, p: float = 2) -> Array:
  """AT map: L2-normalised flatten_HW(mean_c |F|^p) -> [N, H*W]."""
  chex.assert_rank(f, 4)
  a = jnp.mean(jnp.abs(_f32(f)) ** p, axis=-1)
  return l2_normalize(a.reshape(a.shape[0], -1))


def attention(student_feats: Sequence[Array], teacher_feats: Sequence[Array], *,
              p: float = 2) -> Array:
  """Attention transfer (Zagoruyko & Komodakis 2017; RD `Attention`).

  Q(F) = normalize(flatten(mean_c |F|^p)) per sample;
  loss = sum over layers of mean_{N, HW} (Q_s - Q_t)^2.
  RD takes F^p (equal to |F|^p for p=2); channel sum vs mean cancels in the
  normalisation. Channel counts may differ.

  Args:
    student_feats: sequence of [N, H, W, C_s] maps.
    teacher_feats: sequence of [N, H', W', C_t] maps; larger maps are pooled.
    p: the exponent.

  Returns:
    A scalar.
  """
  _check_seqs(student_feats, teacher_feats, 'attention')
  total = jnp.zeros((), jnp.float32)
  for s, t in zip(student_feats, teacher_feats):
    s, t = match_spatial(s, jax.lax.stop_gradient(t))
    total += jnp.mean(jnp.square(attention_map(s, p) - attention_map(t, p)))
  return total


def _poly_kernel(a: Array, b: Array) -> Array:
  """(a_i . b_j)^2 over channel pairs: a [N, Ca, HW], b [N, Cb, HW] -> [N, Cb, Ca]."""
  return jnp.square(jnp.einsum('nid,njd->nji', a, b))


def nst(student_feats: Sequence[Array], teacher_feats: Sequence[Array]) -> Array:
  """Neuron selectivity transfer with the d=2 polynomial kernel (RD `NSTLoss`).

  Each channel is L2-normalised over HW; with k(a, b) = (a^T b)^2 over channel
  pairs, per layer loss = mean(K_tt) + mean(K_ss) - 2 mean(K_st) (each a mean
  over N x C x C'), the teacher term detached; summed over layers. Channel
  counts may differ; spatial sizes are matched by pooling.

  Args:
    student_feats: sequence of [N, H, W, C_s] maps.
    teacher_feats: sequence of [N, H', W', C_t] maps.

  Returns:
    A scalar.
  """
  _check_seqs(student_feats, teacher_feats, 'nst')
  total = jnp.zeros((), jnp.float32)
  for s, t in zip(student_feats, teacher_feats):
    s, t = match_spatial(_f32(s), jax.lax.stop_gradient(_f32(t)))
    n = s.shape[0]
    # NHWC -> [N, C, HW], normalised over HW per channel.
    fs = l2_normalize(s.reshape(n, -1, s.shape[-1]).transpose(0, 2, 1))
    ft = l2_normalize(t.reshape(n, -1, t.shape[-1]).transpose(0, 2, 1))
    total += (jnp.mean(_poly_kernel(ft, ft)) + jnp.mean(_poly_kernel(fs, fs))
              - 2.0 * jnp.mean(_poly_kernel(fs, ft)))
  return total


def fsp_matrices(feats: Sequence[Array]) -> list[Array]:
  """FSP matrices of consecutive maps (RD `FSP.compute_fsp`).

  For each pair (bottom, top) = (feats[i], feats[i+1]) the larger map is pooled
  to the smaller and G_{ij} = (1/HW) sum_hw top_{i,hw} bottom_{j,hw}, giving
  [N, C_top, C_bottom].
  """
  out = []
  for bot, top in zip(feats[:-1], feats[1:]):
    chex.assert_rank([bot, top], 4)
    bot, top = match_spatial(_f32(bot), _f32(top))
    hw = bot.shape[1] * bot.shape[2]
    out.append(jnp.einsum('nhwi,nhwj->nij', top, bot) / hw)
  return out


def fsp(student_feats: Sequence[Array], teacher_feats: Sequence[Array], *,
        pair_weights: Sequence[float] | None = None) -> Array:
  """Flow-of-solution-procedure loss (Yim et al. 2017; RD `FSP`).

  FSP matrices between consecutive maps of each sequence (RD: feat[:-1], i.e.
  stem, stage1, ...), per pair mean over N x C1 x C2 of (G_s - G_t)^2, summed
  over pairs (optionally weighted: seed 002 uses [1, 3, 1]). Student and
  teacher channel counts must match map by map.

  Args:
    student_feats: sequence of L >= 2 [N, H_i, W_i, C_i] maps.
    teacher_feats: sequence of L maps with the same channel counts.
    pair_weights: L-1 weights, or None for all ones.

  Returns:
    A scalar.
  """
  _check_seqs(student_feats, teacher_feats, 'fsp')
  if len(student_feats) < 2:
    raise ValueError('fsp needs at least two maps per network.')
  for i, (s, t) in enumerate(zip(student_feats, teacher_feats)):
    if s.shape[-1] != t.shape[-1]:
      raise ValueError(f'fsp: map {i} has {s.shape[-1]} student channels but {t.shape[-1]} '
                       'teacher channels; FSP needs equal channel counts.')
  n_pairs = len(student_feats) - 1
  weights = [1.0] * n_pairs if pair_weights is None else list(pair_weights)
  if len(weights) != n_pairs:
    raise ValueError(f'fsp: {len(weights)} pair_weights for {n_pairs} pairs.')
  g_s = fsp_matrices(student_feats)
  g_t = fsp_matrices([jax.lax.stop_gradient(t) for t in teacher_feats])
  total = jnp.zeros((), jnp.float32)
  for w, s, t in zip(weights, g_s, g_t):
    total += w * jnp.mean(jnp.square(s - t))
  return total
