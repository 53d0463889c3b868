"""Correlation congruence (Peng et al. 2019) with RD's trainable linear embeddings.

Synopsis:
  dict(method='cc', weight=0.02)                 RD: LinearEmbed(d -> 128) on both pooled vectors,
                                                 consecutive-sample form (`correlation_congruence`)
  dict(method='cc', form='rbf')                  paper form (Taylor-RBF correlation matrices;
                                                 `correlation_congruence_rbf` stops the gradient
                                                 of its teacher side, so embed_t stays at init)

Both embeddings are trained with the student (RD puts them in its optimizer,
with weight decay).
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Term, register_method, resolve_feature_pair

Array = jax.Array


def correlation_congruence(student_emb: Array, teacher_emb: Array,
                           mask: Array | None = None) -> Array:
  """Correlation congruence, RD's author-supplied form (`Correlation`).

  On already-embedded vectors (RD embeds both with trainable Linear(d -> 128)):
  delta = |e_s - e_t|; loss = mean_{i < N-1} sum_d delta_{i,d} delta_{i+1,d}
  (consecutive samples of the batch). Needs equal widths; 0 for a batch of 1
  (the reference's mean of an empty tensor is NaN).
  With `mask` [N] only pairs of two valid rows count; the masked last batch has its
  valid rows first, so these are the consecutive pairs of the valid rows alone.

  Args:
    student_emb: [N, D].
    teacher_emb: [N, D].
    mask: optional 0/1 validity of the rows [N].

  Returns:
    A scalar.
  """
  losses.check_embeddings(student_emb, teacher_emb)
  chex.assert_equal_shape([student_emb, teacher_emb])
  delta = jnp.abs(losses.flat(student_emb) - losses.flat(jax.lax.stop_gradient(teacher_emb)))
  if delta.shape[0] < 2:
    return jnp.zeros((), jnp.float32)
  prods = jnp.sum(delta[:-1] * delta[1:], axis=1)
  if mask is None:
    return jnp.mean(prods)
  m = jnp.asarray(mask, jnp.float32)
  w = m[:-1] * m[1:]
  return jnp.sum(prods * w) / jnp.maximum(jnp.sum(w), 1.0)


def _rbf_correlation(e: Array, gamma: float, order: int) -> Array:  # [N, N]
  f = losses.l2_normalize(losses.flat(e))
  s = f @ f.T
  corr = jnp.zeros_like(s)
  for p in range(order + 1):
    corr += math.exp(-2.0 * gamma) * (2.0 * gamma) ** p / math.factorial(p) * s ** p
  return corr


def correlation_congruence_rbf(student_emb: Array, teacher_emb: Array, *, gamma: float = 0.4,
                               order: int = 2, mask: Array | None = None) -> Array:
  """Correlation congruence, paper form (Peng et al. 2019; as in KD-Zoo).

  f = normalize(e); S = f f^T; corr = sum_{p=0..P} e^{-2 gamma} (2 gamma)^p / p! S^p
  (Taylor expansion of the Gaussian RBF); loss = MSE(corr_s, corr_t) (mean over N^2).

  Args:
    student_emb: [N, D_s].
    teacher_emb: [N, D_t].
    gamma: RBF parameter.
    order: Taylor order P.
    mask: optional 0/1 validity of the rows [N] (mean over pairs of valid rows).

  Returns:
    A scalar.
  """
  losses.check_embeddings(student_emb, teacher_emb)
  c_s = _rbf_correlation(student_emb, gamma, order)
  c_t = _rbf_correlation(jax.lax.stop_gradient(teacher_emb), gamma, order)
  if mask is None:
    return jnp.mean(jnp.square(c_s - c_t))
  w = losses.pair_weights(mask)
  return jnp.sum(jnp.square(c_s - c_t) * w) / jnp.maximum(jnp.sum(w), 1.0)


@register_method('cc', family='relational', paper='Peng et al. 2019, Correlation Congruence for '
                 'Knowledge Distillation')
def build_cc(info: BuildInfo, *, weight: float = 0.02, feat_dim: int = 128, form: str = 'rd',
             gamma: float = 0.4, order: int = 2, student_feature: str | None = None,
             teacher_feature: str | None = None) -> Term:
  """Correlation congruence on trainable 128-d linear embeddings of the pooled vectors."""
  if form not in ('rd', 'rbf'):
    raise ValueError(f"cc: form must be 'rd' or 'rbf', got {form!r}.")
  if not (isinstance(feat_dim, int) and feat_dim > 0):
    raise ValueError(f'cc: feat_dim must be a positive int, got {feat_dim!r}.')
  (ks,), (kt,) = resolve_feature_pair(info, 'cc', student_feature, teacher_feature, ('pooled',))
  embed = modules.Embed(feat_dim, normalize=False)

  def init(rng, ctx: Context):
    return modules.init_modules(rng, {'embed_s': (embed, ctx.student[ks]),
                                 'embed_t': (embed, ctx.teacher[kt])})

  def loss(aux, ctx: Context):
    e_s = modules.apply_module(embed, aux, 'embed_s', ctx.student[ks], ctx.train, {})
    # The teacher feature is constant but its embedding is trained: no stop_gradient here.
    e_t = modules.apply_module(embed, aux, 'embed_t', ctx.teacher[kt], ctx.train, {})
    if form == 'rd':
      return _cc_rd(e_s, e_t, ctx.mask), {}, {}
    return correlation_congruence_rbf(e_s, e_t, gamma=gamma, order=order, mask=ctx.mask), {}, {}
  return Term(name='cc', method='cc', weight=float(weight), loss=loss, init=init, masked=True)


def _cc_rd(e_s, e_t, mask=None):
  """RD `Correlation` with gradients into both embeddings.

  `correlation_congruence` stops the gradient of its teacher argument,
  which would freeze RD's trainable teacher embedding; the same formula is
  applied here to the difference directly (passing e_s - e_t and zeros).
  """
  return correlation_congruence(e_s - e_t, jnp.zeros_like(e_t), mask)
