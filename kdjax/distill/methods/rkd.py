"""Relational KD (Park et al. 2019, Relational Knowledge Distillation; RD `RKDLoss`):
`rkd` (distance + angle), `rkd_d` (distance only), `rkd_a` (angle only).

Formulas, on the pooled vector e:
  d_ij = sqrt(max(||e_i - e_j||^2, 1e-12)) / mean_{d > 0}(d)  (diagonal 0)
  L_D = smooth-L1(d_s, d_t);  L_A = smooth-L1 of all N^3 triplet cosines
  rkd = 25 L_D + 50 L_A (weight 1);  rkd_d weight 25;  rkd_a weight 50

  dict(method='rkd')
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill.api import BuildInfo, Context, FeatureArg, Term, no_aux, register_method

Array = jax.Array


def _smooth_l1(x: Array, y: Array, w: Array | None = None) -> Array:
  """torch smooth_l1_loss with beta=1 (Huber delta=1), mean reduction (over w > 0 if given)."""
  d = jnp.abs(x - y)
  h = jnp.where(d < 1.0, 0.5 * d * d, d - 0.5)
  if w is None:
    return jnp.mean(h)
  return jnp.sum(h * w) / jnp.maximum(jnp.sum(w), 1.0)


def _pdist(e: Array, eps: float = 1e-12) -> Array:
  """RD `RKDLoss.pdist`: sqrt(clamp(|e_i|^2 + |e_j|^2 - 2 e_i.e_j, eps)), zero diagonal."""
  sq = jnp.sum(e * e, axis=1)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * (e @ e.T), eps)
  d = jnp.sqrt(d2)
  return jnp.where(jnp.eye(e.shape[0], dtype=bool), 0.0, d)


def _mean_normalised(d: Array, w: Array | None = None) -> Array:
  """d / mean(d[d > 0]) (entries with w > 0 only); unchanged when none is positive (batch of 1)."""
  pos = d > 0 if w is None else (d > 0) & (w > 0)
  mean = jnp.sum(jnp.where(pos, d, 0.0)) / jnp.maximum(jnp.sum(pos), 1)
  return d / jnp.where(mean > 0, mean, 1.0)


def _angles(e: Array) -> Array:
  """u_ijk = <normalize(e_j - e_i), normalize(e_k - e_i)> for all triplets, flattened."""
  diff = losses.l2_normalize(e[None, :, :] - e[:, None, :], axis=-1)  # [i, j, D]
  return jnp.einsum('ijd,ikd->ijk', diff, diff).reshape(-1)


def rkd_distance(student_emb: Array, teacher_emb: Array, mask: Array | None = None) -> Array:
  """RKD distance term (RD `RKDLoss`): smooth-L1 between mean-normalised distance matrices.

  d_ij = sqrt(max(||e_i - e_j||^2, 1e-12)), diagonal 0, divided by the mean of
  its positive entries (separately per network); smooth-L1 mean over N^2.
  With `mask` [N] only pairs of valid rows count (the valid rows alone).
  """
  losses.check_embeddings(student_emb, teacher_emb)
  w = None if mask is None else losses.pair_weights(mask)
  t_d = _mean_normalised(_pdist(losses.flat(jax.lax.stop_gradient(teacher_emb))), w)
  s_d = _mean_normalised(_pdist(losses.flat(student_emb)), w)
  return _smooth_l1(s_d, t_d, w)


def rkd_angle(student_emb: Array, teacher_emb: Array, mask: Array | None = None) -> Array:
  """RKD angle term (RD `RKDLoss`): smooth-L1 between all N^3 triplet cosines.

  With `mask` [N] only triplets of valid rows count.
  """
  losses.check_embeddings(student_emb, teacher_emb)
  t_a = _angles(losses.flat(jax.lax.stop_gradient(teacher_emb)))
  s_a = _angles(losses.flat(student_emb))
  w = None
  if mask is not None:
    m = jnp.asarray(mask, jnp.float32)
    w = (m[:, None, None] * m[None, :, None] * m[None, None, :]).reshape(-1)
  return _smooth_l1(s_a, t_a, w)


def rkd(student_emb: Array, teacher_emb: Array, *, distance_weight: float = 25.0,
        angle_weight: float = 50.0, mask: Array | None = None) -> Array:
  """Relational KD, distance + angle (Park et al. 2019; RD `RKDLoss`).

  loss = distance_weight * `rkd_distance` + angle_weight * `rkd_angle`; the
  teacher side carries no gradient. Invariant to a global scale of either
  embedding (up to the 1e-12 clamp).

  Args:
    student_emb: [N, D_s] (RD: the penultimate vector feat[-1]).
    teacher_emb: [N, D_t].
    distance_weight: lambda_D.
    angle_weight: lambda_A.
    mask: optional 0/1 validity of the rows [N] (masked rows leave every pair).

  Returns:
    A scalar.
  """
  loss = jnp.zeros((), jnp.float32)
  if distance_weight:
    loss += distance_weight * rkd_distance(student_emb, teacher_emb, mask)
  if angle_weight:
    loss += angle_weight * rkd_angle(student_emb, teacher_emb, mask)
  return loss


def _rkd_term(name, info, weight, student_features, teacher_features, fn):
  ks, kt = checks.one_embedding(info, name, student_features, teacher_features)

  def loss(ctx: Context):
    if ctx.mask is None:
      return fn(ctx.student[ks], ctx.teacher[kt])
    return fn(ctx.student[ks], ctx.teacher[kt], mask=ctx.mask)
  return Term(name=name, method=name, weight=float(weight), loss=no_aux(loss), masked=True)


@register_method('rkd', family='relational', paper='Park et al. 2019, Relational Knowledge '
                 'Distillation')
def build_rkd(info: BuildInfo, *, weight: float = 1.0, distance_weight: float = 25.0,
              angle_weight: float = 50.0, student_features: FeatureArg = None,
              teacher_features: FeatureArg = None) -> Term:
  """RKD distance + angle on the pooled vector (RD: 25 D + 50 A, weight 1)."""
  checks.nonneg('rkd', distance_weight=distance_weight, angle_weight=angle_weight)
  return _rkd_term('rkd', info, weight, student_features, teacher_features,
                   lambda s, t, mask=None: rkd(s, t, distance_weight=distance_weight,
                                               angle_weight=angle_weight, mask=mask))


@register_method('rkd_d', family='relational', paper='Park et al. 2019, Relational Knowledge '
                 'Distillation (distance term)')
def build_rkd_d(info: BuildInfo, *, weight: float = 25.0, student_features: FeatureArg = None,
                teacher_features: FeatureArg = None) -> Term:
  """RKD distance term alone on the pooled vector, weight 25 (= lambda_D)."""
  return _rkd_term('rkd_d', info, weight, student_features, teacher_features,
                   rkd_distance)


@register_method('rkd_a', family='relational', paper='Park et al. 2019, Relational Knowledge '
                 'Distillation (angle term)')
def build_rkd_a(info: BuildInfo, *, weight: float = 50.0, student_features: FeatureArg = None,
                teacher_features: FeatureArg = None) -> Term:
  """RKD angle term alone on the pooled vector, weight 50 (= lambda_A)."""
  return _rkd_term('rkd_a', info, weight, student_features, teacher_features,
                   rkd_angle)
