"""PS-KD registration: `pskd` (progressive self-knowledge distillation), teacher-free.

Synopsis:
  config.distill.ce_weight = 0.0            # the term is the whole (soft) CE
  config.distill.terms = {'pskd': dict(method='pskd', alpha_T=0.8)}

  The term keeps a per-sample memory [num_train, K] (`aux_state/<term>/pskd/
  memory`, checkpointed) of the softmax predictions of the last epoch,
  indexed by ctx.index. Targets: (1 - a_t) onehot(y) + a_t memory[i] with
  a_t = alpha_T (e + 1) / E (e = epochs done in the stage, E its length);
  during epoch 0 the targets are the labels. `logits_feature` picks the
  logits to train (e.g. 'member1/logits' or an ONE branch), so several pskd
  terms (with distinct names) can serve a cohort. `pskd_objective` is the
  reusable core for other terms.
"""

from __future__ import annotations

import jax.numpy as jnp

from kdjax.distill.api import BuildInfo, Context, Term, register_method
from kdjax.losses import pskd as L

__all__ = ['build_pskd', 'pskd_objective', 'pskd_memory_init']


def pskd_memory_init(num_train: int, num_classes: int, dtype=jnp.float32):
  """The zero memory; unwritten rows count as one-hot (see `losses.pskd.pskd_targets`)."""
  return jnp.zeros((num_train, num_classes), dtype)


def pskd_objective(memory, logits, ctx: Context, *, alpha_T: float = 0.8,  # noqa: N803
                   total_epochs: float | None = None):
  """(targets, alpha_t, new_memory) for one batch: the PS-KD bookkeeping around any loss."""
  epochs = ctx.stage_epochs if total_epochs is None else total_epochs
  alpha_t = L.pskd_alpha(ctx.progress, epochs, alpha_T)
  first = jnp.floor(ctx.progress) < 1
  targets = L.pskd_targets(ctx.labels, memory[ctx.index], alpha_t, ctx.num_classes, first)
  return targets, alpha_t, L.update_memory(memory, ctx.index, logits)


@register_method('pskd', family='self', paper='Kim et al. 2021, Self-Knowledge Distillation '
                 'with Progressive Refinement of Targets (PS-KD)')
def build_pskd(info: BuildInfo, *, weight: float = 1.0, alpha_T: float = 0.8,  # noqa: N803
               logits_feature: str = 'logits', total_epochs: float | None = None,
               memory_dtype: str = 'float32') -> Term:
  """Soft CE against (1 - a_t) y + a_t p_prev, a_t = alpha_T (e+1)/E (official alpha_T 0.8)."""
  shape = info.feature('student', logits_feature).shape
  if len(shape) != 2 or shape[-1] != info.num_classes:
    raise ValueError(f'pskd: {logits_feature!r} must be [N, num_classes={info.num_classes}] '
                     f'logits, got {tuple(shape)}.')
  if not 0.0 <= alpha_T <= 1.0:
    raise ValueError(f'pskd: alpha_T must be in [0, 1], got {alpha_T!r}.')
  if total_epochs is not None and not total_epochs > 0:
    raise ValueError(f'pskd: total_epochs must be > 0, got {total_epochs!r}.')
  dtype = jnp.dtype(memory_dtype)

  def init(rng, ctx: Context):
    del rng, ctx
    return {'pskd': {'memory': pskd_memory_init(info.num_train, info.num_classes, dtype)}}

  def loss(aux, ctx: Context):
    logits = ctx.student[logits_feature]
    targets, alpha_t, memory = pskd_objective(aux['pskd']['memory'], logits, ctx,
                                              alpha_T=alpha_T, total_epochs=total_epochs)
    return L.pskd_loss(logits, targets), {'alpha_t': alpha_t}, {'pskd': {'memory': memory}}

  return Term(name='pskd', method='pskd', weight=float(weight), loss=loss, init=init,
              needs_teacher=False)
