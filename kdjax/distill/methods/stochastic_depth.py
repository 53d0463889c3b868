"""Stochastic depth (Huang et al. 2016, Deep Networks with Stochastic Depth), parameter-free.

Formula: residual block l of L is kept with probability
  p_l = 1 - (l / L) (1 - p_L),   p_L = final_survival_prob (0.5 in the paper),
i.e. its branch is multiplied by b_l ~ Bernoulli(p_l), drawn inside the step
from (seed, step); evaluation deploys the expected network (branches scaled
by p_l). The term adds no loss of its own (the step's CE trains the sampled
sub-network); it only declares the stochastic-depth student pass.

  config.distill.terms = {'stochastic_depth': dict(final_survival_prob=0.5)}   # ce_weight 1
"""

from __future__ import annotations

import jax.numpy as jnp

from kdjax import models
from kdjax.distill.api import BuildInfo, Context, Needs, Term, no_aux, register_method


def survival(info: BuildInfo, method: str, final_survival_prob: float) -> tuple[float, ...]:
  """The student's per-block survival probabilities (linear decay to `final_survival_prob`)."""
  if not (isinstance(final_survival_prob, (int, float)) and 0.0 < final_survival_prob <= 1.0):
    raise ValueError(f'{method}: final_survival_prob must be in (0, 1], got '
                     f'{final_survival_prob!r}.')
  blocks = info.spec('student').num_blocks
  if blocks < 1:
    raise ValueError(f'{method}: the student {info.student_arch} has no residual blocks that '
                     'support stochastic depth; use a ResNet or WRN student.')
  return tuple(float(p) for p in models.survival_probs(blocks, final_survival_prob))


@register_method('stochastic_depth', family='self', paper='Huang et al. 2016, Deep Networks '
                 'with Stochastic Depth')
def build_stochastic_depth(info: BuildInfo, *, weight: float = 1.0,
                           final_survival_prob: float = 0.5) -> Term:
  """Stochastic-depth training (linear decay to p_L = 0.5); no loss, the step's CE trains."""
  probs = survival(info, 'stochastic_depth', final_survival_prob)

  def loss(ctx: Context):
    del ctx
    return jnp.zeros((), jnp.float32)
  return Term(name='stochastic_depth', method='stochastic_depth', weight=float(weight),
              loss=no_aux(loss), needs_teacher=False, needs=Needs(survival=probs),
              masked=True)  # no loss of its own: a masked batch changes nothing here
