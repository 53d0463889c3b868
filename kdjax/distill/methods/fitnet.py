"""FitNet hints (Romero et al. 2015) with RD's ConvReg regressor (single-stage as RD,
two-stage as "KD beyond model compression").

Synopsis:
  dict(method='fitnet', weight=100.0)                 RD: CE + 100 MSE(r(s.stage2), t.stage2)
  dict(method='fitnet', weight=1.0, hint_layer=2)     hint stage of "KD beyond model compression"

The regressor r (`modules.ConvReg`) is chosen by the spatial sizes of the two
maps; pairs it cannot map (student map smaller than half the teacher's, or an
odd ratio) are rejected at build time. `hint_trainable(arch, k)` gives the
`stage.trainable` regexes of the student parameters up to stage k (for the
original FitNet / "KD beyond model compression" hint stage: student up to the guided layer + r).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax import models
from kdjax.distill import checks
from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Term, register_method, resolve_feature_pair
from kdjax.models.spec import with_prefix

Array = jax.Array


def hint_mse(student: Array, teacher: Array) -> Array:
  """FitNet hint (RD `HintLoss` = nn.MSELoss): mean over every element of (s - t)^2."""
  chex.assert_equal_shape([student, teacher])
  return jnp.mean(jnp.square(losses.f32(student) - jax.lax.stop_gradient(losses.f32(teacher))))


def hint_feature(hint_layer: int) -> str:
  return 'stem' if hint_layer == 0 else f'stage{hint_layer}'


@register_method('fitnet', family='features', paper='Romero et al. 2015, FitNets: Hints for '
                 'Thin Deep Nets')
def build_fitnet(info: BuildInfo, *, weight: float = 100.0, hint_layer: int = 2,
                 student_feature: str | None = None, teacher_feature: str | None = None,
                 use_relu: bool = True) -> Term:
  """FitNet hint: MSE between ConvReg(student map) and the teacher map (RD weight 100, stage2)."""
  ks = student_feature or hint_feature(hint_layer)
  kt = teacher_feature or hint_feature(hint_layer)
  (ks,), (kt,) = resolve_feature_pair(info, 'fitnet', ks, kt, ())
  checks.require_maps(info, 'fitnet', [ks], [kt])
  s, t = checks.shape(info, 'student', ks), checks.shape(info, 'teacher', kt)
  try:
    modules.conv_reg_kind(s[1:3], t[1:3])
  except ValueError as e:
    raise ValueError(f'fitnet: student {info.student_arch} {ks!r} {s[1:]} -> teacher '
                     f'{info.teacher_arch} {kt!r} {t[1:]}: {e}') from None
  reg = modules.ConvReg(t[-1], tuple(s[1:3]), tuple(t[1:3]), use_relu=use_relu)

  def init(rng, ctx: Context):
    return modules.init_modules(rng, {'regressor': (reg, ctx.student[ks])})

  def loss(aux, ctx: Context):
    stats = {}
    f_s = modules.apply_module(reg, aux, 'regressor', ctx.student[ks], ctx.train, stats)
    return hint_mse(f_s, ctx.teacher[kt]), {}, modules.state_out(aux, stats)

  def per_sample(aux, ctx: Context):  # the hint MSE of each sample (mean over H, W, C)
    stats = {}
    f_s = modules.apply_module(reg, aux, 'regressor', ctx.student[ks], ctx.train, stats)
    sq = jnp.square(losses.f32(f_s) - jax.lax.stop_gradient(losses.f32(ctx.teacher[kt])))
    return losses.row_mean(sq), {}, modules.state_out(aux, stats)
  return Term(name='fitnet', method='fitnet', weight=float(weight), loss=loss, init=init,
              per_sample=per_sample)


def hint_trainable(arch: str, stage: int, num_classes: int = 10) -> list[str]:
  """Regexes over 'student/<module>/...' matching the parameters that compute `stage<k>`.

  From the model's own description (`ModelSpec.params_up_to`); raises
  ValueError for an unknown architecture or one without a per-stage layout.
  """
  if stage < 0:
    raise ValueError(f'stage must be >= 0, got {stage}.')
  return list(with_prefix(models.spec(arch, num_classes).params_up_to(stage), 'student/'))
