"""Softened-distribution primitives on logits shared by several methods (pure functions).

Synopsis:
  kd(student_logits, teacher_logits, temperature)      tau^2 KL(p_t^tau || p_s^tau), batchmean
  soft_cross_entropy(student_logits, target_probs, temperature)   -mean sum q log p_s^tau
  check_logit_pair(s, t)                                two [N, K] arrays of equal shape

Both wrap their targets in `stop_gradient` and compute in float32. Method
losses live in `kdjax.distill.methods.<method>`.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from kdjax.losses.masking import masked_mean

Array = jax.Array


def check_logit_pair(student_logits, teacher_logits):
  """Two rank-2 [N, K] arrays of the same shape."""
  chex.assert_rank([student_logits, teacher_logits], 2)
  chex.assert_equal_shape([student_logits, teacher_logits])


def kd(student_logits: Array, teacher_logits: Array, *, temperature: float = 4.0) -> Array:
  """Hinton KD: tau^2 * KL(p_t^tau || p_s^tau), summed over classes, mean over batch.

  RD `DistillKL`: `KLDiv(log p_s, p_t, reduction='sum') * tau^2 / N`.

  Args:
    student_logits: [N, K].
    teacher_logits: [N, K]; no gradient flows into them.
    temperature: softmax temperature tau.

  Returns:
    A scalar.
  """
  check_logit_pair(student_logits, teacher_logits)
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  log_ps = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  log_pt = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  pt = jnp.exp(log_pt)
  kl = jnp.sum(pt * (log_pt - log_ps), axis=-1)
  return temperature ** 2 * jnp.mean(kl)


def soft_cross_entropy(student_logits: Array, target_probs: Array, *,
                       temperature: float = 1.0, mask: Array | None = None) -> Array:
  """Soft cross-entropy -mean_n sum_k q_nk log softmax(z_n / tau)_k, no tau^2.

  As in BSS (`L_soft`, tau=3 in the official code) and PS-KD (tau=1).

  Args:
    student_logits: [N, K].
    target_probs: [N, K] target distribution; no gradient flows into it.
    temperature: tau applied to the student logits only.
    mask: optional 0/1 [N] (a masked last batch): the mean runs over the rows with mask 1.

  Returns:
    A scalar.
  """
  check_logit_pair(student_logits, target_probs)
  q = jax.lax.stop_gradient(target_probs).astype(jnp.float32)
  log_p = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  return masked_mean(-jnp.sum(q * log_p, axis=-1), mask)
