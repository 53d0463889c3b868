"""Factor transfer (Kim et al. 2018, NeurIPS): paraphraser init stage + translator.

Synopsis:
  stage 1: dict(method='ft', phase='paraphraser', variant=V)   trains aux/ft/paraphraser only
  stage 2: dict(method='ft', variant=V)                         student + aux/ft/translator

Both phases build the same term name 'ft' with the same variables
{'paraphraser', 'translator'}, so the paraphraser trained in stage 1 is the
(frozen) one used in stage 2 (restrict `stage.trainable` as `kdjax.rd_table`
does: stage 1 '^aux/ft/paraphraser/', stage 2 '^student/', '^aux/ft/translator/').

Variants (METHODS.md FT):
  'official' (default; Jangho-Kim/Factor-Transfer-pytorch): no BN anywhere; factor
     loss = L1-mean of per-sample L2-normalised flattened factors; reconstruction
     L1; weight 500.
  'rd' (RepDistiller): translator with BN; factor = AT-like map
     normalize(mean_c F^2) compared by mean |d|; reconstruction MSE; weight 200.
Paraphraser input: the teacher's last stage output (RD feat[-2]); the
translator reads the student's. Rate k = 0.5.
"""

from __future__ import annotations

from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Term, register_method
from kdjax.distill.methods import aux_common as ac
from kdjax.losses import aux_losses

_DEFAULT_WEIGHT = {('official', 'distill'): 500.0, ('rd', 'distill'): 200.0,
                   ('official', 'paraphraser'): 1.0, ('rd', 'paraphraser'): 1.0}


@register_method('ft', family='features', paper='Kim et al. 2018, Paraphrasing Complex Network: '
                 'Network Compression via Factor Transfer')
def build_ft(info: BuildInfo, *, weight: float | None = None, phase: str = 'distill',
             variant: str = 'official', rate: float = 0.5, reconstruction: str | None = None,
             student_feature: str | None = None, teacher_feature: str | None = None) -> Term:
  """Factor transfer: phase 'paraphraser' (init stage) or 'distill'; variant 'official' | 'rd'."""
  if phase not in ('distill', 'paraphraser'):
    raise ValueError(f"ft: phase must be 'distill' or 'paraphraser', got {phase!r}.")
  if variant not in ('official', 'rd'):
    raise ValueError(f"ft: variant must be 'official' or 'rd', got {variant!r}.")
  if reconstruction is None:
    reconstruction = 'l1' if variant == 'official' else 'mse'
  if reconstruction not in ('l1', 'mse'):
    raise ValueError(f"ft: reconstruction must be 'l1' or 'mse', got {reconstruction!r}.")
  ac.positive('ft', rate=rate)
  (ks,), (kt,) = ac.feature_pair(info, 'ft', student_feature, teacher_feature,
                                 lambda: info.stages('student')[-1:],
                                 lambda: info.stages('teacher')[-1:])
  ac.require_maps(info, 'ft', [ks], [kt])
  s, t = ac.shape(info, 'student', ks), ac.shape(info, 'teacher', kt)
  ac.require_poolable('ft', ks, kt, s, t)
  factor_ch = int(t[-1] * rate)
  if factor_ch < 1:
    raise ValueError(f'ft: rate {rate} leaves no factor channels for {t[-1]} teacher channels.')
  para = modules.Paraphraser(t[-1], rate, use_bn=False)
  trans = modules.Translator(factor_ch, use_bn=(variant == 'rd'))
  w = _DEFAULT_WEIGHT[(variant, phase)] if weight is None else float(weight)

  def init(rng, ctx: Context):
    return ac.init_modules(rng, {'paraphraser': (para, ctx.teacher[kt]),
                                 'translator': (trans, ctx.student[ks])})

  def loss(aux, ctx: Context):
    stats = {}
    f_t = ctx.teacher[kt]
    if phase == 'paraphraser':
      _, rec = ac.apply_module(para, aux, 'paraphraser', f_t, ctx.train, stats)
      value = aux_losses.ft_reconstruction(rec, f_t, reconstruction)
    else:
      factor_t = ac.apply_module(para, aux, 'paraphraser', f_t, ctx.train, stats,
                                 method='encode')
      factor_s = ac.apply_module(trans, aux, 'translator', ctx.student[ks], ctx.train, stats)
      if variant == 'rd':
        value = aux_losses.ft_factor_rd(factor_s, factor_t)
      else:
        value = aux_losses.ft_factor_official(factor_s, factor_t)
    return value, {}, ac.state_out(aux, stats)
  return Term(name='ft', method='ft', weight=w, loss=loss, init=init)
