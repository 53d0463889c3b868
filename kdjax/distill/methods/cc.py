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

import jax.numpy as jnp

from kdjax import losses
from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Term, register_method
from kdjax.distill.methods import aux_common as ac


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
  (ks,), (kt,) = ac.feature_pair(info, 'cc', student_feature, teacher_feature, ('pooled',))
  embed = modules.Embed(feat_dim, normalize=False)

  def init(rng, ctx: Context):
    return ac.init_modules(rng, {'embed_s': (embed, ctx.student[ks]),
                                 'embed_t': (embed, ctx.teacher[kt])})

  def loss(aux, ctx: Context):
    e_s = ac.apply_module(embed, aux, 'embed_s', ctx.student[ks], ctx.train, {})
    # The teacher feature is constant but its embedding is trained: no stop_gradient here.
    e_t = ac.apply_module(embed, aux, 'embed_t', ctx.teacher[kt], ctx.train, {})
    if form == 'rd':
      return _cc_rd(e_s, e_t), {}, {}
    return losses.correlation_congruence_rbf(e_s, e_t, gamma=gamma, order=order), {}, {}
  return Term(name='cc', method='cc', weight=float(weight), loss=loss, init=init)


def _cc_rd(e_s, e_t):
  """RD `Correlation` with gradients into both embeddings.

  `losses.correlation_congruence` stops the gradient of its teacher argument,
  which would freeze RD's trainable teacher embedding; the same formula is
  applied here to the difference directly (passing e_s - e_t and zeros).
  """
  return losses.correlation_congruence(e_s - e_t, jnp.zeros_like(e_t))
