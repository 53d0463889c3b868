"""Decoupled KD (Zhao et al. 2022, Decoupled Knowledge Distillation; mdistiller `dkd_loss`).

Formula:
  L = ramp(e) * tau^2 * (alpha * KL(b_t || b_s) + beta * KL(q_t || q_s))
b = [p_gt, 1 - p_gt] the binary target / non-target split, q = softmax over the
non-target classes; alpha 1, beta 8, tau 4, ramp(e) = min(e / 20, 1) on the
1-indexed epoch.

  dict(method='dkd', beta=8.0)
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill.api import BuildInfo, Context, Term, no_aux, register_method

Array = jax.Array


def dkd(student_logits: Array, teacher_logits: Array, labels: Array, *, alpha: float = 1.0,
        beta: float = 8.0, temperature: float = 4.0, per_sample: bool = False) -> Array:
  """Decoupled KD (mdistiller `dkd_loss`): alpha * TCKD + beta * NCKD.

  TCKD = tau^2 * KL([p_t,gt, 1-p_t,gt] || [p_s,gt, 1-p_s,gt]), batchmean.
  NCKD = tau^2 * KL(q_t || q_s), batchmean, where q = softmax(z/tau - 1000*gt_mask)
  is the distribution over the non-target classes (the reference's mask trick).
  The binary log-probabilities are computed with log-sum-exp instead of
  log(sum p), which equals the reference where it is finite and stays finite
  where the reference gives log(0).

  Args:
    student_logits: [N, K].
    teacher_logits: [N, K]; no gradient flows into them.
    labels: [N] integer class indices.
    alpha: TCKD weight.
    beta: NCKD weight.
    temperature: tau.
    per_sample: return each sample's loss [N] (whose mean is the loss) instead.

  Returns:
    A scalar (or [N]).
  """
  losses.check_logit_pair(student_logits, teacher_logits)
  chex.assert_rank(labels, 1)
  chex.assert_equal_shape_prefix([student_logits, labels], 1)
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  gt_mask = jax.nn.one_hot(labels, student_logits.shape[-1], dtype=jnp.float32)

  def parts(z):
    z = z.astype(jnp.float32) / temperature
    lse_all = jax.nn.logsumexp(z, axis=-1)
    log_p_gt = jnp.sum(z * gt_mask, axis=-1) - lse_all
    masked = z - 1000.0 * gt_mask
    log_p_other = jax.nn.logsumexp(masked, axis=-1) - lse_all
    log_binary = jnp.stack([log_p_gt, log_p_other], axis=-1)
    log_q = jax.nn.log_softmax(masked, axis=-1)
    return log_binary, log_q

  log_bs, log_qs = parts(student_logits)
  log_bt, log_qt = parts(teacher_logits)
  n = student_logits.shape[0]
  if per_sample:
    tckd = jnp.sum(jnp.exp(log_bt) * (log_bt - log_bs), axis=-1)
    nckd = jnp.sum(jnp.exp(log_qt) * (log_qt - log_qs), axis=-1)
  else:
    tckd = jnp.sum(jnp.exp(log_bt) * (log_bt - log_bs)) / n
    nckd = jnp.sum(jnp.exp(log_qt) * (log_qt - log_qs)) / n
  return temperature ** 2 * (alpha * tckd + beta * nckd)


@register_method('dkd', family='logits', paper='Zhao et al. 2022, Decoupled Knowledge '
                 'Distillation')
def build_dkd(info: BuildInfo, *, weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0,
              temperature: float = 4.0, warmup_epochs: float = 20.0) -> Term:
  """Decoupled KD (mdistiller): alpha TCKD + beta NCKD with a linear weight warm-up.

  As in mdistiller, epoch e (1-indexed) uses min(e / warmup_epochs, 1), i.e.
  min((floor(progress) + 1) / warmup_epochs, 1); warmup_epochs=0 disables it.
  """
  checks.check_logits(info)
  checks.positive('dkd', temperature=temperature)
  checks.nonneg('dkd', alpha=alpha, beta=beta, warmup_epochs=warmup_epochs)

  def run(ctx: Context, per_sample: bool):
    if warmup_epochs > 0:
      ramp = jnp.minimum((jnp.floor(ctx.progress) + 1.0) / warmup_epochs, 1.0)
    else:
      ramp = jnp.ones(())
    value = dkd(ctx.student['logits'], ctx.teacher['logits'], ctx.labels, alpha=alpha,
                       beta=beta, temperature=temperature, per_sample=per_sample)
    return ramp * value, {'warmup': ramp}
  return Term(name='dkd', method='dkd', weight=float(weight),
              loss=no_aux(lambda ctx: run(ctx, False)),
              per_sample=no_aux(lambda ctx: run(ctx, True)))
