"""Self-Guidance (Peng et al. 2021, Self-Guidance: Improve Deep Neural Network Generalization
via Knowledge Distillation): a stochastic-depth sub-network distilled from the expected network.

Formula (the paper's eq. 5):
  L = CE(z_S, y) + CE(z_T, y) + lam * tau^2 * KL(p_T^tau || p_S^tau),   lam 0.25, tau 3
z_S: the sampled sub-network, the student pass with residual branch l kept
with probability p_l = 1 - (l / L)(1 - p_L) (`final_survival_prob` p_L = 0.5,
eq. 3); z_T: the expected network, every branch scaled by p_l (eq. 4); one
backward through both passes. The paper writes KL(p^S, p^T); kdjax uses the
standard Hinton direction KL(p_T || p_S) (docs/methods.md marks the direction
[UNVERIFIED]); `kl_direction='student_teacher'` gives KL(p_S || p_T).

  config.distill.ce_weight = 0.0                   # the term computes CE(sub) itself
  config.distill.terms = {'self_guidance': dict(final_survival_prob=0.5)}

The term declares a stochastic-depth student (the step draws the Bernoulli
keep mask from (seed, step) inside the jitted step, so one compile serves
every mask) and an extra student pass, `ctx.apply_student(images,
branch_scale=ctx.survival)`, for the expected network; evaluation deploys the
expected network. Options: lam=0 ("W/O online distillation": CE(sub) +
CE(full)); stop_teacher=True ("W/O backward full network": only the
sub-network is updated); student_ce=False if the config keeps ce_weight=1
instead. Plain stochastic depth is the `stochastic_depth` method.

  keep = keep_mask(key, survival)                     # b_l ~ Bernoulli(p_l), as the train step
  sub_logits  = student(x, branch_scale=keep)         # student: sampled sub-network
  full_logits = student(x, branch_scale=survival)     # teacher: expected network
  loss, metrics = self_guidance(sub_logits, full_logits, labels, lam=0.25, temperature=3.0)
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax

from kdjax import losses
from kdjax.distill.api import BuildInfo, Context, Needs, Term, no_aux, register_method
from kdjax.distill.methods import stochastic_depth

Array = jax.Array


def keep_mask(key: Array, survival: Array) -> Array:
  """One Bernoulli keep mask per residual block (float32 [L]), as the train step draws it."""
  return jax.random.bernoulli(key, survival).astype(jnp.float32)


def _kl(p_logits: Array, q_logits: Array, temperature: float, mask: Array | None = None) -> Array:
  """mean_n KL(softmax(p/tau) || softmax(q/tau)), summed over classes; gradients to both."""
  log_p = jax.nn.log_softmax(p_logits.astype(jnp.float32) / temperature, axis=-1)
  log_q = jax.nn.log_softmax(q_logits.astype(jnp.float32) / temperature, axis=-1)
  return losses.masked_mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1), mask)


def self_guidance(sub_logits: Array, full_logits: Array, labels: Array, *, lam: float = 0.25,
                  temperature: float = 3.0, stop_teacher: bool = False,
                  kl_direction: str = 'teacher_student', student_ce: bool = True,
                  mask: Array | None = None) -> tuple[Array, dict[str, Array]]:
  """Self-Guidance loss (the Self-Guidance paper, eq. 5).

  loss = [CE(z_S, y)] + CE(z_T, y) + lam * tau^2 * KL(p_T^tau || p_S^tau)

  Args:
    sub_logits: [N, K] logits of the sampled sub-network (student).
    full_logits: [N, K] logits of the expected full network (teacher).
    labels: [N] integer labels.
    lam: trade-off lambda (0 gives "W/O online distillation").
    temperature: tau of the distillation term.
    stop_teacher: stop the gradient through the full-network pass (the
      paper's "W/O backward full network" ablation: only the sub-network is
      updated; CE(z_T) then carries no gradient and is left out of the loss).
    kl_direction: 'teacher_student' (KL(p_T||p_S), default) or 'student_teacher'.
    student_ce: include CE(z_S, y); set False when the train step adds it.
    mask: optional 0/1 [N] (a masked last batch): every mean over N runs over the
      rows with mask 1.

  Returns:
    (scalar loss, metrics with ce_sub, ce_full, kl).
  """
  chex.assert_rank([sub_logits, full_logits], 2)
  chex.assert_equal_shape([sub_logits, full_logits])
  if stop_teacher:
    full_logits = jax.lax.stop_gradient(full_logits)
  ce_sub = losses.masked_mean(optax.softmax_cross_entropy_with_integer_labels(
      sub_logits.astype(jnp.float32), labels), mask)
  ce_full = losses.masked_mean(optax.softmax_cross_entropy_with_integer_labels(
      full_logits.astype(jnp.float32), labels), mask)
  if kl_direction == 'teacher_student':
    kl = _kl(full_logits, sub_logits, temperature, mask)
  elif kl_direction == 'student_teacher':
    kl = _kl(sub_logits, full_logits, temperature, mask)
  else:
    raise ValueError(f"kl_direction must be 'teacher_student' or 'student_teacher', got "
                     f'{kl_direction!r}.')
  loss = lam * temperature ** 2 * kl
  if student_ce:
    loss = loss + ce_sub
  if not stop_teacher:
    loss = loss + ce_full
  return loss, {'ce_sub': ce_sub, 'ce_full': ce_full, 'kl': kl}


@register_method('self_guidance', family='self', paper='Peng et al. 2021, Self-Guidance: '
                 'Improve Deep Neural Network Generalization via Knowledge Distillation')
def build_self_guidance(info: BuildInfo, *, weight: float = 1.0, lam: float = 0.25,
                        temperature: float = 3.0, stop_teacher: bool = False,
                        kl_direction: str = 'teacher_student', student_ce: bool = True,
                        final_survival_prob: float = 0.5) -> Term:
  """Stochastic-depth sub-network (p_L 0.5) distilled from the expected network (lam 0.25, tau 3)."""
  if 'logits' not in info.student_shapes:
    raise ValueError('self_guidance: the student has no "logits" feature.')
  if not (isinstance(temperature, (int, float)) and temperature > 0):
    raise ValueError(f'self_guidance: temperature must be > 0, got {temperature!r}.')
  if not (isinstance(lam, (int, float)) and lam >= 0):
    raise ValueError(f'self_guidance: lam must be >= 0, got {lam!r}.')
  if kl_direction not in ('teacher_student', 'student_teacher'):
    raise ValueError(f"self_guidance: kl_direction must be 'teacher_student' or "
                     f"'student_teacher', got {kl_direction!r}.")
  probs = stochastic_depth.survival(info, 'self_guidance', final_survival_prob)

  def loss(ctx: Context):
    if ctx.survival is None or ctx.apply_student is None:
      raise ValueError('self_guidance: the Context lacks the survival probabilities or '
                       'apply_student this term declares (Term.needs); run it through the '
                       'train step.')
    full_logits, _ = ctx.apply_student(ctx.images, branch_scale=ctx.survival)
    return self_guidance(ctx.student['logits'], full_logits, ctx.labels, lam=lam,
                         temperature=temperature, stop_teacher=stop_teacher,
                         kl_direction=kl_direction, student_ce=student_ce, mask=ctx.mask)
  # masked: every mean over N reads ctx.mask; the full-network pass runs inside the step's
  # batch_mask block, so its train-mode BN takes the valid rows' statistics.
  return Term(name='self_guidance', method='self_guidance', weight=float(weight),
              loss=no_aux(loss), needs_teacher=False, masked=True,
              needs=Needs(images=True, student_pass=True, survival=probs))
