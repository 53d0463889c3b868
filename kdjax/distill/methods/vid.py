"""Variational information distillation (Ahn et al. 2019; RD `VIDLoss`).

Synopsis:
  dict(method='vid', weight=1.0)      stage outputs (RD feat[1:-1])

Per layer: mu = 1x1 regressor (C_s -> C_t -> C_t -> C_t, ReLU between, no bias,
no BN) on the student map, per-channel sigma^2 = softplus(theta) + 1e-5 with
sigma^2 = 5 at init; L = mean 0.5[(mu - t)^2 / sigma^2 + log sigma^2], summed
over layers. The larger map is pooled to the smaller first (the student before
the regressor, as RD).
"""

from __future__ import annotations

from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Term, register_method
from kdjax.distill.methods import aux_common as ac
from kdjax.losses import aux_losses
from kdjax.losses.features import adaptive_avg_pool_to


@register_method('vid', family='features', paper='Ahn et al. 2019, Variational Information '
                 'Distillation for Knowledge Transfer')
def build_vid(info: BuildInfo, *, weight: float = 1.0, init_var: float = 5.0, eps: float = 1e-5,
              student_features=None, teacher_features=None) -> Term:
  """VID: Gaussian NLL of the teacher maps under 1x1-conv regressors of the student maps."""
  s_keys, t_keys = ac.feature_pair(info, 'vid', student_features, teacher_features,
                                   lambda: info.stages('student'), lambda: info.stages('teacher'))
  ac.require_maps(info, 'vid', s_keys, t_keys)
  ac.positive('vid', eps=eps)
  if not init_var > eps:
    raise ValueError(f'vid: init_var must exceed eps={eps}, got {init_var!r}.')
  regs = []
  for ks, kt in zip(s_keys, t_keys):
    s, t = ac.shape(info, 'student', ks), ac.shape(info, 'teacher', kt)
    ac.require_poolable('vid', ks, kt, s, t)
    regs.append(modules.VIDRegressor(t[-1], t[-1], init_var=init_var, eps=eps))

  def _match(x, y):
    hx, hy = x.shape[1:3], y.shape[1:3]
    if hx[0] > hy[0] or hx[1] > hy[1]:
      return adaptive_avg_pool_to(x, tuple(hy)), y
    if hx != hy:
      return x, adaptive_avg_pool_to(y, tuple(hx))
    return x, y

  def init(rng, ctx: Context):
    mods = {}
    for i, (ks, kt) in enumerate(zip(s_keys, t_keys)):
      x, _ = _match(ctx.student[ks], ctx.teacher[kt])
      mods[f'layer{i}'] = (regs[i], x)
    return ac.init_modules(rng, mods)

  def loss(aux, ctx: Context):
    total, metrics = 0.0, {}
    for i, (ks, kt) in enumerate(zip(s_keys, t_keys)):
      x, y = _match(ctx.student[ks], ctx.teacher[kt])
      mu, var = ac.apply_module(regs[i], aux, f'layer{i}', x, ctx.train, {})
      total = total + aux_losses.vid_nll(mu, var, y)
      metrics[f'var{i}'] = var.mean()
    return total, metrics, {}
  return Term(name='vid', method='vid', weight=float(weight), loss=loss, init=init)
