"""Weighted soft-label distillation (Zhou et al. 2021, Rethinking Soft Labels for Knowledge
Distillation: A Bias-Variance Tradeoff Perspective; official ImageNet code).

Formula:
  w_n = 1 - exp(-max(CE_s,n / (CE_t,n + 1e-7), 0))   (tau 1, no gradient)
  L = tau^2 * mean_n w_n * (-sum_k p_t^tau log p_s^tau),   tau 2, weight 2.5

  dict(method='wsld', weight=2.5, temperature=2.0)
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill.api import BuildInfo, Context, Term, no_aux, register_method

Array = jax.Array


def weighted_soft_label_weights(student_logits: Array, teacher_logits: Array,
                                labels: Array) -> Array:
  """WSLD per-sample weights w = 1 - exp(-max(CE_s / (CE_t + 1e-7), 0)).

  Computed at tau=1 on stop-gradient logits, as in the official WSLD code.

  Args:
    student_logits: [N, K].
    teacher_logits: [N, K].
    labels: [N] integer class indices.

  Returns:
    [N] weights in [0, 1), without gradient.
  """
  losses.check_logit_pair(student_logits, teacher_logits)
  chex.assert_rank(labels, 1)
  chex.assert_equal_shape_prefix([student_logits, labels], 1)
  zs = jax.lax.stop_gradient(student_logits).astype(jnp.float32)
  zt = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
  onehot = jax.nn.one_hot(labels, zs.shape[-1], dtype=jnp.float32)
  ce_s = -jnp.sum(onehot * jax.nn.log_softmax(zs, axis=-1), axis=-1)
  ce_t = -jnp.sum(onehot * jax.nn.log_softmax(zt, axis=-1), axis=-1)
  ratio = jnp.maximum(ce_s / (ce_t + 1e-7), 0.0)
  return 1.0 - jnp.exp(-ratio)


def wsld(student_logits: Array, teacher_logits: Array, labels: Array, *,
         temperature: float = 2.0, per_sample: bool = False) -> Array:
  """Weighted soft-label distillation (Zhou et al. 2021, official ImageNet code).

  loss = tau^2 * mean_n[w_n * (-sum_k p_t^tau log p_s^tau)], with w from
  `weighted_soft_label_weights`.

  Args:
    student_logits: [N, K].
    teacher_logits: [N, K]; no gradient flows into them.
    labels: [N] integer class indices.
    temperature: tau (official ImageNet: 2).
    per_sample: return each sample's loss [N] (whose mean is the loss) instead.

  Returns:
    A scalar (or [N]).
  """
  losses.check_logit_pair(student_logits, teacher_logits)
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  w = weighted_soft_label_weights(student_logits, teacher_logits, labels)
  pt = jax.nn.softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  log_ps = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  soft = -jnp.sum(pt * log_ps, axis=-1)
  if per_sample:
    return temperature ** 2 * (w * soft)
  return temperature ** 2 * jnp.mean(w * soft)


@register_method('wsld', family='logits', paper='Zhou et al. 2021, Rethinking Soft Labels '
                 'for Knowledge Distillation: A Bias-Variance Tradeoff Perspective')
def build_wsld(info: BuildInfo, *, weight: float = 2.5, temperature: float = 2.0) -> Term:
  """Weighted soft-label distillation (official ImageNet: alpha 2.5, tau 2)."""
  checks.check_logits(info)
  checks.positive('wsld', temperature=temperature)

  def loss(ctx: Context):
    return wsld(ctx.student['logits'], ctx.teacher['logits'], ctx.labels,
                       temperature=temperature)

  def per_sample(ctx: Context):
    return wsld(ctx.student['logits'], ctx.teacher['logits'], ctx.labels,
                temperature=temperature, per_sample=True)
  return Term(name='wsld', method='wsld', weight=float(weight), loss=no_aux(loss),
              per_sample=no_aux(per_sample))
