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

Losses:
PS-KD (progressive self-knowledge distillation), pure functions.

Synopsis:
  alpha_t = pskd_alpha(progress, total_epochs, alpha_T=0.8)   # alpha_T (e+1)/E
  targets = pskd_targets(labels, memory[index], alpha_t, num_classes, first_epoch)
  loss = soft_cross_entropy(logits, targets)                  # tau 1
  memory = update_memory(memory, index, logits)               # this epoch's softmax

Source: docs/methods.md and lgcnsai/PS-KD-Pytorch (main.py): targets
(1 - alpha_t) onehot(y) + alpha_t P_prev[i], with P_prev the detached softmax
stored for sample i during the previous epoch; at epoch 0 the memory is the
one-hot label, so the targets are the labels. Memory entries are
overwritten after every batch.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill.api import BuildInfo, Context, Needs, Term, register_method

Array = jax.Array


def pskd_alpha(progress: Array, total_epochs: float, alpha_T: float = 0.8) -> Array:  # noqa: N803
  """alpha_t = alpha_T * (e + 1) / E with e = floor(progress) the 0-indexed epoch."""
  return alpha_T * (jnp.floor(progress) + 1.0) / total_epochs


def pskd_targets(labels: Array, previous: Array, alpha_t: Array, num_classes: int,
                 first_epoch: Array | bool = False) -> Array:
  """(1 - alpha_t) onehot(y) + alpha_t P_prev, P_prev = onehot(y) at epoch 0.

  Args:
    labels: [N] integer labels.
    previous: [N, K] stored predictions of these samples from the last epoch.
      Rows that were never written (all zero: e.g. samples left out of an
      epoch by drop-remainder batching) count as one-hot, like epoch 0.
    alpha_t: scalar mixing weight.
    num_classes: K.
    first_epoch: True during epoch 0 (the official code sets the memory to one-hot).

  Returns:
    [N, K] soft targets (no gradient).
  """
  chex.assert_rank(labels, 1)
  chex.assert_shape(previous, (labels.shape[0], num_classes))
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  previous = previous.astype(jnp.float32)
  unseen = jnp.sum(previous, axis=-1, keepdims=True) <= 0
  prev = jnp.where(jnp.logical_or(first_epoch, unseen), onehot, previous)
  return jax.lax.stop_gradient((1.0 - alpha_t) * onehot + alpha_t * prev)


def pskd_loss(logits: Array, targets: Array, mask: Array | None = None) -> Array:
  """-mean_n sum_k targets_nk log softmax(z_n)_k (official `Custom_CrossEntropy_PSKD`).

  With a 0/1 `mask` [N] the mean runs over the valid rows only.
  """
  return losses.soft_cross_entropy(logits, targets, temperature=1.0, mask=mask)


def update_memory(memory: Array, index: Array, logits: Array, mask: Array | None = None) -> Array:
  """memory[index] = softmax(stop_gradient(logits)) (the current epoch's predictions).

  With a 0/1 `mask` [N] only the valid rows are written: a padding row (which repeats a
  valid row's index) is sent out of range and dropped, so no index gets two writes.
  """
  chex.assert_rank([memory, logits], 2)
  probs = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)
  if mask is not None:
    index = jnp.where(jnp.asarray(mask, bool), index, memory.shape[0])
  return memory.at[index].set(probs.astype(memory.dtype), mode='drop')


__all__ = ['build_pskd', 'pskd_objective', 'pskd_memory_init']


def pskd_memory_init(num_train: int, num_classes: int, dtype=jnp.float32):
  """The zero memory; unwritten rows count as one-hot (see `pskd.pskd_targets`)."""
  return jnp.zeros((num_train, num_classes), dtype)


def pskd_objective(memory, logits, ctx: Context, *, alpha_T: float = 0.8,  # noqa: N803
                   total_epochs: float | None = None):
  """(targets, alpha_t, new_memory) for one batch: the PS-KD bookkeeping around any loss."""
  epochs = ctx.stage_epochs if total_epochs is None else total_epochs
  alpha_t = pskd_alpha(ctx.progress, epochs, alpha_T)
  first = jnp.floor(ctx.progress) < 1
  targets = pskd_targets(ctx.labels, memory[ctx.index], alpha_t, ctx.num_classes, first)
  return targets, alpha_t, update_memory(memory, ctx.index, logits, ctx.mask)


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
    return pskd_loss(logits, targets, ctx.mask), {'alpha_t': alpha_t}, {'pskd': {'memory': memory}}

  # masked: the soft CE is a mean over the valid rows and padding rows write no memory.
  return Term(name='pskd', method='pskd', weight=float(weight), loss=loss, init=init,
              needs_teacher=False, needs=Needs(index=True), masked=True)
