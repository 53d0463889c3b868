"""Probabilistic knowledge transfer (Passalis & Tefas 2018; RD `PKT`).

Formula: x <- x / (||x|| + eps); K = (x x^T + 1) / 2, row-normalised to P;
  L = mean_{N^2} P_t log((P_t + eps) / (P_s + eps)),   pooled vector, weight 30000

  dict(method='pkt', weight=30000.0)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill.api import BuildInfo, Context, FeatureArg, Term, no_aux, register_method

Array = jax.Array


def _pkt_normalise(x: Array, eps: float) -> Array:
  # x / (||x|| + eps); the reference's NaN -> 0 cannot occur with eps > 0, and
  # the where-guard keeps the gradient of ||x|| finite at x = 0.
  sq = jnp.sum(x * x, axis=1, keepdims=True)
  norm = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
  return x / (norm + eps)


def pkt(student_emb: Array, teacher_emb: Array, *, eps: float = 1e-7,
        mask: Array | None = None) -> Array:
  """Probabilistic knowledge transfer (Passalis & Tefas 2018; RD `PKT`).

  x <- x / (||x|| + eps) per row; K = (x x^T + 1) / 2, row-normalised to a
  conditional distribution P; loss = mean over N^2 of
  P_t log((P_t + eps) / (P_s + eps)), diagonal included.

  Args:
    student_emb: [N, D_s].
    teacher_emb: [N, D_t].
    eps: the reference's 1e-7.
    mask: optional 0/1 validity of the rows [N]: masked samples leave every
      row sum and the mean (the loss of the valid rows alone).

  Returns:
    A scalar.
  """
  losses.check_embeddings(student_emb, teacher_emb)

  w = None if mask is None else losses.pair_weights(mask)

  def cond(x):
    x = _pkt_normalise(losses.flat(x), eps)
    k = (x @ x.T + 1.0) / 2.0
    if w is None:
      return k / jnp.sum(k, axis=1, keepdims=True)
    k = k * w
    den = jnp.sum(k, axis=1, keepdims=True)
    return k / jnp.where(den > 0, den, 1.0)  # masked rows: all 0 (no 0/0 in any gradient)

  p_s = cond(student_emb)
  p_t = cond(jax.lax.stop_gradient(teacher_emb))
  if w is None:
    return jnp.mean(p_t * jnp.log((p_t + eps) / (p_s + eps)))
  # Masked entries have p_s = p_t = 0, so they add 0 to the sum.
  return jnp.sum(p_t * jnp.log((p_t + eps) / (p_s + eps))) / jnp.maximum(jnp.sum(w), 1.0)


@register_method('pkt', family='relational', paper='Passalis & Tefas 2018, Learning Deep '
                 'Representations with Probabilistic Knowledge Transfer')
def build_pkt(info: BuildInfo, *, weight: float = 30000.0, student_features: FeatureArg = None,
              teacher_features: FeatureArg = None) -> Term:
  """Probabilistic knowledge transfer on the pooled vector, weight 30000."""
  ks, kt = checks.one_embedding(info, 'pkt', student_features, teacher_features)

  def loss(ctx: Context):
    return pkt(ctx.student[ks], ctx.teacher[kt], mask=ctx.mask)
  return Term(name='pkt', method='pkt', weight=float(weight), loss=no_aux(loss), masked=True)
