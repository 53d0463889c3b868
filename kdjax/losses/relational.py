"""Relation-based distillation losses (SP, RKD, PKT, CC) as pure functions.

Synopsis:
  These losses compare relations between the samples of a batch (Gram
  matrices, pairwise distances, angles, conditional probabilities), so student
  and teacher widths may differ; only the batch size must agree. Inputs of
  rank > 2 are flattened per sample, as RepDistiller's `view(N, -1)` does.
  Teacher inputs are wrapped in `stop_gradient`; norms and means are guarded so
  zero or identical rows and batches of 1 give finite values and gradients.

      loss = rkd(s_pooled, t_pooled)              # 25 * distance + 50 * angle
"""

from __future__ import annotations

import math
from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from kdjax.losses.features import l2_normalize

Array = jax.Array


def _flat(x: Array) -> Array:
  return x.reshape(x.shape[0], -1).astype(jnp.float32)


def _check_emb(s: Array, t: Array):
  chex.assert_rank([s, t], {2, 3, 4})
  chex.assert_equal_shape_prefix([s, t], 1)


def _smooth_l1(x: Array, y: Array) -> Array:
  """torch smooth_l1_loss with beta=1 (Huber delta=1), mean reduction."""
  d = jnp.abs(x - y)
  return jnp.mean(jnp.where(d < 1.0, 0.5 * d * d, d - 0.5))


def similarity_preserving(student_feats: Sequence[Array],
                          teacher_feats: Sequence[Array]) -> Array:
  """Similarity-preserving KD (Tung & Mori 2019; RD `Similarity`).

  f = flatten(F) [N, CHW]; G = f f^T, each row L2-normalised;
  loss = ||G_t - G_s||_F^2 / N^2, summed over the pairs of the sequences.

  Args:
    student_feats: sequence of [N, ...] maps (RD: the last conv map).
    teacher_feats: sequence of [N, ...] maps, any widths.

  Returns:
    A scalar.
  """
  if isinstance(student_feats, (jax.Array, np.ndarray)) or isinstance(
      teacher_feats, (jax.Array, np.ndarray)):
    raise TypeError('similarity_preserving takes sequences; wrap a single map in a list.')
  if len(student_feats) != len(teacher_feats) or not student_feats:
    raise ValueError(f'similarity_preserving: got {len(student_feats)} student and '
                     f'{len(teacher_feats)} teacher features; need the same non-zero number.')
  total = jnp.zeros((), jnp.float32)
  for s, t in zip(student_feats, teacher_feats):
    _check_emb(s, t)
    fs, ft = _flat(s), _flat(jax.lax.stop_gradient(t))
    n = fs.shape[0]
    g_s = l2_normalize(fs @ fs.T)
    g_t = l2_normalize(ft @ ft.T)
    total += jnp.sum(jnp.square(g_t - g_s)) / (n * n)
  return total


def _pdist(e: Array, eps: float = 1e-12) -> Array:
  """RD `RKDLoss.pdist`: sqrt(clamp(|e_i|^2 + |e_j|^2 - 2 e_i.e_j, eps)), zero diagonal."""
  sq = jnp.sum(e * e, axis=1)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * (e @ e.T), eps)
  d = jnp.sqrt(d2)
  return jnp.where(jnp.eye(e.shape[0], dtype=bool), 0.0, d)


def _mean_normalised(d: Array) -> Array:
  """d / mean(d[d > 0]); left unchanged when no entry is positive (batch of 1)."""
  pos = d > 0
  mean = jnp.sum(jnp.where(pos, d, 0.0)) / jnp.maximum(jnp.sum(pos), 1)
  return d / jnp.where(mean > 0, mean, 1.0)


def _angles(e: Array) -> Array:
  """u_ijk = <normalize(e_j - e_i), normalize(e_k - e_i)> for all triplets, flattened."""
  diff = l2_normalize(e[None, :, :] - e[:, None, :], axis=-1)  # [i, j, D]
  return jnp.einsum('ijd,ikd->ijk', diff, diff).reshape(-1)


def rkd_distance(student_emb: Array, teacher_emb: Array) -> Array:
  """RKD distance term (RD `RKDLoss`): smooth-L1 between mean-normalised distance matrices.

  d_ij = sqrt(max(||e_i - e_j||^2, 1e-12)), diagonal 0, divided by the mean of
  its positive entries (separately per network); smooth-L1 mean over N^2.
  """
  _check_emb(student_emb, teacher_emb)
  t_d = _mean_normalised(_pdist(_flat(jax.lax.stop_gradient(teacher_emb))))
  s_d = _mean_normalised(_pdist(_flat(student_emb)))
  return _smooth_l1(s_d, t_d)


def rkd_angle(student_emb: Array, teacher_emb: Array) -> Array:
  """RKD angle term (RD `RKDLoss`): smooth-L1 between all N^3 triplet cosines."""
  _check_emb(student_emb, teacher_emb)
  t_a = _angles(_flat(jax.lax.stop_gradient(teacher_emb)))
  s_a = _angles(_flat(student_emb))
  return _smooth_l1(s_a, t_a)


def rkd(student_emb: Array, teacher_emb: Array, *, distance_weight: float = 25.0,
        angle_weight: float = 50.0) -> Array:
  """Relational KD, distance + angle (Park et al. 2019; RD `RKDLoss`).

  loss = distance_weight * `rkd_distance` + angle_weight * `rkd_angle`; the
  teacher side carries no gradient. Invariant to a global scale of either
  embedding (up to the 1e-12 clamp).

  Args:
    student_emb: [N, D_s] (RD: the penultimate vector feat[-1]).
    teacher_emb: [N, D_t].
    distance_weight: lambda_D.
    angle_weight: lambda_A.

  Returns:
    A scalar.
  """
  loss = jnp.zeros((), jnp.float32)
  if distance_weight:
    loss += distance_weight * rkd_distance(student_emb, teacher_emb)
  if angle_weight:
    loss += angle_weight * rkd_angle(student_emb, teacher_emb)
  return loss


def _pkt_normalise(x: Array, eps: float) -> Array:
  # x / (||x|| + eps); the reference's NaN -> 0 cannot occur with eps > 0, and
  # the where-guard keeps the gradient of ||x|| finite at x = 0.
  sq = jnp.sum(x * x, axis=1, keepdims=True)
  norm = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
  return x / (norm + eps)


def pkt(student_emb: Array, teacher_emb: Array, *, eps: float = 1e-7) -> Array:
  """Probabilistic knowledge transfer (Passalis & Tefas 2018; RD `PKT`).

  x <- x / (||x|| + eps) per row; K = (x x^T + 1) / 2, row-normalised to a
  conditional distribution P; loss = mean over N^2 of
  P_t log((P_t + eps) / (P_s + eps)), diagonal included.

  Args:
    student_emb: [N, D_s].
    teacher_emb: [N, D_t].
    eps: the reference's 1e-7.

  Returns:
    A scalar.
  """
  _check_emb(student_emb, teacher_emb)

  def cond(x):
    x = _pkt_normalise(_flat(x), eps)
    k = (x @ x.T + 1.0) / 2.0
    return k / jnp.sum(k, axis=1, keepdims=True)

  p_s = cond(student_emb)
  p_t = cond(jax.lax.stop_gradient(teacher_emb))
  return jnp.mean(p_t * jnp.log((p_t + eps) / (p_s + eps)))


def correlation_congruence(student_emb: Array, teacher_emb: Array) -> Array:
  """Correlation congruence, RD's author-supplied form (`Correlation`).

  On already-embedded vectors (RD embeds both with trainable Linear(d -> 128)):
  delta = |e_s - e_t|; loss = mean_{i < N-1} sum_d delta_{i,d} delta_{i+1,d}
  (consecutive samples of the batch). Needs equal widths; 0 for a batch of 1
  (the reference's mean of an empty tensor is NaN).

  Args:
    student_emb: [N, D].
    teacher_emb: [N, D].

  Returns:
    A scalar.
  """
  _check_emb(student_emb, teacher_emb)
  chex.assert_equal_shape([student_emb, teacher_emb])
  delta = jnp.abs(_flat(student_emb) - _flat(jax.lax.stop_gradient(teacher_emb)))
  if delta.shape[0] < 2:
    return jnp.zeros((), jnp.float32)
  return jnp.mean(jnp.sum(delta[:-1] * delta[1:], axis=1))


def _rbf_correlation(e: Array, gamma: float, order: int) -> Array:
  f = l2_normalize(_flat(e))
  s = f @ f.T
  corr = jnp.zeros_like(s)
  for p in range(order + 1):
    corr += math.exp(-2.0 * gamma) * (2.0 * gamma) ** p / math.factorial(p) * s ** p
  return corr


def correlation_congruence_rbf(student_emb: Array, teacher_emb: Array, *, gamma: float = 0.4,
                               order: int = 2) -> Array:
  """Correlation congruence, paper form (Peng et al. 2019; as in KD-Zoo).

  f = normalize(e); S = f f^T; corr = sum_{p=0..P} e^{-2 gamma} (2 gamma)^p / p! S^p
  (Taylor expansion of the Gaussian RBF); loss = MSE(corr_s, corr_t) (mean over N^2).

  Args:
    student_emb: [N, D_s].
    teacher_emb: [N, D_t].
    gamma: RBF parameter.
    order: Taylor order P.

  Returns:
    A scalar.
  """
  _check_emb(student_emb, teacher_emb)
  c_s = _rbf_correlation(student_emb, gamma, order)
  c_t = _rbf_correlation(jax.lax.stop_gradient(teacher_emb), gamma, order)
  return jnp.mean(jnp.square(c_s - c_t))
