"""Hinton KD (Hinton et al. 2015, Distilling the Knowledge in a Neural Network).

Formula (RepDistiller `DistillKL`):
  L = tau^2 * mean_n KL(softmax(z_t / tau) || softmax(z_s / tau)),  tau 4, weight 0.9
with the step's CE weighted 0.1 (RD). The loss is the shared softened-KL
primitive `kdjax.losses.kd`.

  dict(method='kd', weight=0.9, temperature=4.0)
"""

from __future__ import annotations

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill.api import BuildInfo, Context, Term, no_aux, register_method


@register_method('kd', family='logits', paper='Hinton et al. 2015, Distilling the '
                 'Knowledge in a Neural Network')
def build_kd(info: BuildInfo, *, weight: float = 0.9, temperature: float = 4.0) -> Term:
  """Hinton KD: tau^2 KL(p_t || p_s) on the logits (RD: weight 0.9, tau 4, ce 0.1)."""
  checks.check_logits(info)
  checks.positive('kd', temperature=temperature)

  def loss(ctx: Context):
    return losses.kd(ctx.student['logits'], ctx.teacher['logits'], temperature=temperature)
  return Term(name='kd', method='kd', weight=float(weight), loss=no_aux(loss))
