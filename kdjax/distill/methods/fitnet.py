"""FitNet hints with RD's ConvReg regressor (single-stage RD, two-stage seed 002).

Synopsis:
  dict(method='fitnet', weight=100.0)                 RD: CE + 100 MSE(r(s.stage2), t.stage2)
  dict(method='fitnet', weight=1.0, hint_layer=2)     seed 002 hint stage (see rd_table)

The regressor r (`modules.ConvReg`) is chosen by the spatial sizes of the two
maps; pairs it cannot map (student map smaller than half the teacher's, or an
odd ratio) are rejected at build time. `hint_trainable(arch, k)` gives the
`stage.trainable` regexes of the student parameters up to stage k (for the
original FitNet / seed-002 hint stage: student up to the guided layer + r).
"""

from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Term, register_method, resolve_feature_pair

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
  return Term(name='fitnet', method='fitnet', weight=float(weight), loss=loss, init=init)


def hint_trainable(arch: str, stage: int) -> list[str]:
  """Regexes over 'student/<module>/...' matching the parameters that compute `stage<k>`.

  Raises ValueError for an architecture family without a known layout.
  """
  if stage < 0:
    raise ValueError(f'stage must be >= 0, got {stage}.')
  r = range(1, stage + 1)
  if arch.startswith('wrn_'):
    # stage k of RD's WRN is the pre-activation output of group k.
    groups = '|'.join(f'block{g}_' for g in r)
    return [r'^student/conv1/'] + ([rf'^student/({groups})'] if groups else [])
  if arch.startswith('vgg'):
    blocks = '|'.join(f'block{b}_' for b in range(0, stage + 1))
    return [rf'^student/({blocks})']
  if arch == 'mobilenetv2':
    from kdjax.models.mobilenetv2 import _FEATURE_GROUPS
    last = _FEATURE_GROUPS[stage - 1] if stage else -1
    groups = '|'.join(f'blocks{g}_' for g in range(last + 1))
    return [r'^student/(conv1|bn1)/'] + ([rf'^student/({groups})'] if groups else [])
  if re.fullmatch(r'resnet\d+(x4|_cifar)?|shufflenetv[12]', arch):
    layers = '|'.join(f'layer{k}_' for k in r)
    return [r'^student/(conv1|bn1)/'] + ([rf'^student/({layers})'] if layers else [])
  raise ValueError(f'hint_trainable: no parameter layout known for {arch!r}; give '
                   'stage.trainable regexes explicitly.')
