"""Self-Guidance (seed 001) registration: `self_guidance`.

Synopsis:
  config.model.stochastic_depth_final_prob = 0.5   # p_L; linear decay p_l = 1 - l/L (1 - p_L)
  config.distill.ce_weight = 0.0                   # the term computes CE(sub) itself
  config.distill.terms = {'self_guidance': dict(method='self_guidance')}

  The train step runs the main student pass through a sub-network (a
  Bernoulli keep mask drawn from (seed, step) inside the jitted step, so one
  compile serves every mask). The term reruns the student as the *expected*
  network, `ctx.apply_student(images, branch_scale=ctx.survival)` (every
  residual branch scaled by its survival probability, seed 001 eq. 4), and
  returns CE(sub) + CE(full) + lam tau^2 KL(p_full || p_sub) with one backward
  through both passes. Evaluation deploys the expected network.

Options: lam=0 ("W/O online distillation": CE(sub) + CE(full));
stop_teacher=True ("W/O backward full network": only the sub-network is
updated); student_ce=False if the config keeps ce_weight=1 instead. Plain
stochastic depth is a config with no terms and ce_weight 1.
"""

from __future__ import annotations

from kdjax.distill.api import BuildInfo, Context, Term, no_aux, register_method
from kdjax.losses import self_guidance as L


@register_method('self_guidance', family='self', paper='Peng et al. 2021, Self-Guidance: '
                 'Improve Deep Neural Network Generalization via Knowledge Distillation')
def build_self_guidance(info: BuildInfo, *, weight: float = 1.0, lam: float = 0.25,
                        temperature: float = 3.0, stop_teacher: bool = False,
                        kl_direction: str = 'teacher_student', student_ce: bool = True) -> Term:
  """Sub-network (stochastic depth) distilled from the expected full network (lam 0.25, tau 3)."""
  if 'logits' not in info.student_shapes:
    raise ValueError('self_guidance: the student has no "logits" feature.')
  if not (isinstance(temperature, (int, float)) and temperature > 0):
    raise ValueError(f'self_guidance: temperature must be > 0, got {temperature!r}.')
  if not (isinstance(lam, (int, float)) and lam >= 0):
    raise ValueError(f'self_guidance: lam must be >= 0, got {lam!r}.')
  if kl_direction not in ('teacher_student', 'student_teacher'):
    raise ValueError(f"self_guidance: kl_direction must be 'teacher_student' or "
                     f"'student_teacher', got {kl_direction!r}.")

  def loss(ctx: Context):
    if ctx.survival is None:
      raise ValueError('self_guidance needs stochastic depth: set '
                       'config.model.stochastic_depth_final_prob < 1 (the paper uses 0.5).')
    if ctx.apply_student is None:
      raise ValueError('self_guidance needs ctx.apply_student (the train step provides it).')
    full_logits, _ = ctx.apply_student(ctx.images, branch_scale=ctx.survival)
    return L.self_guidance(ctx.student['logits'], full_logits, ctx.labels, lam=lam,
                           temperature=temperature, stop_teacher=stop_teacher,
                           kl_direction=kl_direction, student_ce=student_ce)
  return Term(name='self_guidance', method='self_guidance', weight=float(weight),
              loss=no_aux(loss), needs_teacher=False)
