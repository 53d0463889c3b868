"""PS-KD (progressive self-knowledge distillation), pure functions.

Synopsis:
  alpha_t = pskd_alpha(progress, total_epochs, alpha_T=0.8)   # alpha_T (e+1)/E
  targets = pskd_targets(labels, memory[index], alpha_t, num_classes, first_epoch)
  loss = soft_cross_entropy(logits, targets)                  # tau 1
  memory = update_memory(memory, index, logits)               # this epoch's softmax

Source: METHODS.md section 1 and lgcnsai/PS-KD-Pytorch (main.py): targets
(1 - alpha_t) onehot(y) + alpha_t P_prev[i], with P_prev the detached softmax
stored for sample i during the previous epoch; at epoch 0 the memory is the
one-hot label, so the targets are the labels. Memory entries are
overwritten after every batch.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from kdjax.losses.logits import soft_cross_entropy

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


def pskd_loss(logits: Array, targets: Array) -> Array:
  """-mean_n sum_k targets_nk log softmax(z_n)_k (official `Custom_CrossEntropy_PSKD`)."""
  return soft_cross_entropy(logits, targets, temperature=1.0)


def update_memory(memory: Array, index: Array, logits: Array) -> Array:
  """memory[index] = softmax(stop_gradient(logits)) (the current epoch's predictions)."""
  chex.assert_rank([memory, logits], 2)
  probs = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)
  return memory.at[index].set(probs.astype(memory.dtype))
