"""Registrations of the parameter-free methods (losses in `kdjax.losses`).

Synopsis:
  Each builder checks its feature names, shapes and hyper-parameters against
  `BuildInfo` at config time and returns one `Term` whose loss reads the
  features from the `Context`. Default weights and features follow
  RepDistiller as listed in METHODS.md (the config's `ce_weight` sets the CE
  factor, e.g. 0.1 for RD's KD):

      method     weight  features (student = teacher default)
      kd         0.9     logits (tau 4)
      dkd        1.0     logits (alpha 1, beta 8, tau 4, 20-epoch warm-up)
      at         1000    stage outputs (RD feat[1:-1])
      sp         3000    last stage (RD feat[-2])
      rkd        1.0     pooled (distance 25, angle 50)
      rkd_d      25      pooled (distance term only)
      rkd_a      50      pooled (angle term only)
      pkt        30000   pooled
      nst        50      stage outputs
      fsp        1.0     stem + stage outputs (RD feat[:-1]); equal channels
      tfkd_reg   0.1     student logits only (no teacher)
      wsld       2.5     logits (tau 2)

  Feature arguments take a name or a list of names, e.g.
  `dict(method='at', student_features=['stage2', 'stage3'])`.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp

from kdjax import losses
from kdjax.distill.api import (BuildInfo, Context, FeatureArg, Term, no_aux, pick,
                               resolve_feature_pair, resolve_features,
                               register_method)



# ----------------------------------------------------------------------------
# Build-time helpers

def _last_stage(info: BuildInfo, who: str):
  return lambda: info.stages(who)[-1:]


def _check_maps(info: BuildInfo, method: str, s_keys, t_keys):
  """Rank-4 maps whose spatial sizes can be matched by pooling the larger one."""
  for ks, kt in zip(s_keys, t_keys):
    s, t = info.feature('student', ks).shape, info.feature('teacher', kt).shape
    if len(s) != 4 or len(t) != 4:
      raise ValueError(f'{method}: needs NHWC maps, but student {ks!r} has shape {tuple(s)} '
                       f'and teacher {kt!r} has shape {tuple(t)}.')
    (hs, ws), (ht, wt) = s[1:3], t[1:3]
    if not ((hs >= ht and ws >= wt) or (hs <= ht and ws <= wt)):
      raise ValueError(f'{method}: student {ks!r} ({hs}x{ws}) and teacher {kt!r} ({ht}x{wt}) '
                       'cannot be matched by pooling the larger map.')


def _check_batched(info: BuildInfo, method: str, s_keys, t_keys):
  for ks, kt in zip(s_keys, t_keys):
    s, t = info.feature('student', ks).shape, info.feature('teacher', kt).shape
    if len(s) < 2 or len(t) < 2:
      raise ValueError(f'{method}: needs per-sample features of rank >= 2, got student '
                       f'{ks!r} {tuple(s)} and teacher {kt!r} {tuple(t)}.')


def _check_logits(info: BuildInfo, teacher: bool = True):
  s = info.feature('student', 'logits')
  if s.shape[-1] != info.num_classes:
    raise ValueError(f'student logits {tuple(s.shape)} do not have num_classes='
                     f'{info.num_classes} classes.')
  if teacher:
    t = info.feature('teacher', 'logits')
    if tuple(s.shape[1:]) != tuple(t.shape[1:]):
      raise ValueError(f'student logits {tuple(s.shape)} and teacher logits {tuple(t.shape)} '
                       f'have different class counts.')


def _positive(method: str, **values):
  for k, v in values.items():
    if not (isinstance(v, (int, float)) and v > 0):
      raise ValueError(f'{method}: {k} must be a number > 0, got {v!r}.')


def _nonneg(method: str, **values):
  for k, v in values.items():
    if not (isinstance(v, (int, float)) and v >= 0):
      raise ValueError(f'{method}: {k} must be a number >= 0, got {v!r}.')


# ----------------------------------------------------------------------------
# Logit-based

@register_method('kd', family='logits', paper='Hinton et al. 2015, Distilling the '
                 'Knowledge in a Neural Network')
def build_kd(info: BuildInfo, *, weight: float = 0.9, temperature: float = 4.0) -> Term:
  """Hinton KD: tau^2 KL(p_t || p_s) on the logits (RD: weight 0.9, tau 4, ce 0.1)."""
  _check_logits(info)
  _positive('kd', temperature=temperature)

  def loss(ctx: Context):
    return losses.kd(ctx.student['logits'], ctx.teacher['logits'], temperature=temperature)
  return Term(name='kd', method='kd', weight=float(weight), loss=no_aux(loss))


@register_method('dkd', family='logits', paper='Zhao et al. 2022, Decoupled Knowledge '
                 'Distillation')
def build_dkd(info: BuildInfo, *, weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0,
              temperature: float = 4.0, warmup_epochs: float = 20.0) -> Term:
  """Decoupled KD (mdistiller): alpha TCKD + beta NCKD with a linear weight warm-up.

  As in mdistiller, epoch e (1-indexed) uses min(e / warmup_epochs, 1), i.e.
  min((floor(progress) + 1) / warmup_epochs, 1); warmup_epochs=0 disables it.
  """
  _check_logits(info)
  _positive('dkd', temperature=temperature)
  _nonneg('dkd', alpha=alpha, beta=beta, warmup_epochs=warmup_epochs)

  def loss(ctx: Context):
    if warmup_epochs > 0:
      ramp = jnp.minimum((jnp.floor(ctx.progress) + 1.0) / warmup_epochs, 1.0)
    else:
      ramp = jnp.ones(())
    value = losses.dkd(ctx.student['logits'], ctx.teacher['logits'], ctx.labels, alpha=alpha,
                       beta=beta, temperature=temperature)
    return ramp * value, {'warmup': ramp}
  return Term(name='dkd', method='dkd', weight=float(weight), loss=no_aux(loss))


@register_method('tfkd_reg', family='logits', paper='Yuan et al. 2020, Revisiting Knowledge '
                 'Distillation via Label Smoothing Regularization (Tf-KD reg)')
def build_tfkd_reg(info: BuildInfo, *, weight: float = 0.1, correct_prob: float = 0.99,
                   temperature: float = 20.0, multiplier: float = 100.0,
                   paper_form: bool = False) -> Term:
  """Teacher-free KD with a virtual teacher (official ResNet18 config).

  The official loss is (1 - alpha) CE + alpha * reg with alpha = 0.1: set the
  config's ce_weight = 1 - alpha = 0.9 and this term's weight = alpha = 0.1.
  """
  _check_logits(info, teacher=False)
  _positive('tfkd_reg', temperature=temperature)
  if not 0.0 < correct_prob < 1.0:
    raise ValueError(f'tfkd_reg: correct_prob must be in (0, 1), got {correct_prob!r}.')
  if info.num_classes < 2:
    raise ValueError(f'tfkd_reg: needs at least 2 classes, got {info.num_classes}.')
  num_classes = info.num_classes

  def loss(ctx: Context):
    return losses.label_smoothing_kd(ctx.student['logits'], ctx.labels, num_classes,
                                     correct_prob=correct_prob, temperature=temperature,
                                     multiplier=multiplier, paper_form=paper_form)
  return Term(name='tfkd_reg', method='tfkd_reg', weight=float(weight), loss=no_aux(loss),
              needs_teacher=False)


@register_method('wsld', family='logits', paper='Zhou et al. 2021, Rethinking Soft Labels '
                 'for Knowledge Distillation: A Bias-Variance Tradeoff Perspective')
def build_wsld(info: BuildInfo, *, weight: float = 2.5, temperature: float = 2.0) -> Term:
  """Weighted soft-label distillation (official ImageNet: alpha 2.5, tau 2)."""
  _check_logits(info)
  _positive('wsld', temperature=temperature)

  def loss(ctx: Context):
    return losses.wsld(ctx.student['logits'], ctx.teacher['logits'], ctx.labels,
                       temperature=temperature)
  return Term(name='wsld', method='wsld', weight=float(weight), loss=no_aux(loss))


# ----------------------------------------------------------------------------
# Feature-based

@register_method('at', family='features', paper='Zagoruyko & Komodakis 2017, Paying More '
                 'Attention to Attention')
def build_at(info: BuildInfo, *, weight: float = 1000.0, student_features: FeatureArg = None,
             teacher_features: FeatureArg = None, p: float = 2.0) -> Term:
  """Attention transfer on the stage outputs (RD feat[1:-1]), weight 1000."""
  s_keys, t_keys = resolve_feature_pair(info, 'at', student_features, teacher_features,
                         lambda: info.stages('student'), lambda: info.stages('teacher'))
  _check_maps(info, 'at', s_keys, t_keys)
  _positive('at', p=p)

  def loss(ctx: Context):
    return losses.attention(pick(ctx.student, s_keys), pick(ctx.teacher, t_keys), p=p)
  return Term(name='at', method='at', weight=float(weight), loss=no_aux(loss))


@register_method('nst', family='features', paper='Huang & Wang 2017, Like What You Like: '
                 'Knowledge Distill via Neuron Selectivity Transfer')
def build_nst(info: BuildInfo, *, weight: float = 50.0, student_features: FeatureArg = None,
              teacher_features: FeatureArg = None) -> Term:
  """Neuron selectivity transfer (polynomial kernel) on the stage outputs, weight 50."""
  s_keys, t_keys = resolve_feature_pair(info, 'nst', student_features, teacher_features,
                         lambda: info.stages('student'), lambda: info.stages('teacher'))
  _check_maps(info, 'nst', s_keys, t_keys)

  def loss(ctx: Context):
    return losses.nst(pick(ctx.student, s_keys), pick(ctx.teacher, t_keys))
  return Term(name='nst', method='nst', weight=float(weight), loss=no_aux(loss))


@register_method('fsp', family='features', paper='Yim et al. 2017, A Gift from Knowledge '
                 'Distillation (FSP)')
def build_fsp(info: BuildInfo, *, weight: float = 1.0, student_features: FeatureArg = None,
              teacher_features: FeatureArg = None,
              pair_weights: Sequence[float] | None = None) -> Term:
  """FSP matrices of consecutive maps (stem + stages, RD feat[:-1]), one-stage form.

  RD trains FSP as a 30-epoch init stage; here it is a plain term (weight 1)
  that a staged config can place in its init stage. Student and teacher must
  have equal channel counts map by map (RD reports wrn_40_2 -> wrn_40_1 N/A).
  """
  s_keys, t_keys = resolve_feature_pair(info, 'fsp', student_features, teacher_features,
                         lambda: ('stem',) + info.stages('student'),
                         lambda: ('stem',) + info.stages('teacher'))
  if len(s_keys) < 2:
    raise ValueError(f'fsp: needs at least two maps per network, got {list(s_keys)}.')
  _check_maps(info, 'fsp', s_keys, t_keys)
  for ks, kt in zip(s_keys, t_keys):
    cs, ct = info.feature('student', ks).shape[-1], info.feature('teacher', kt).shape[-1]
    if cs != ct:
      raise ValueError(
          f'fsp: student {info.arch("student") or ""} {ks!r} has {cs} channels but teacher '
          f'{info.arch("teacher") or ""} {kt!r} has {ct}; FSP compares C x C\' matrices, so '
          'the channel counts must match map by map (e.g. wrn_40_2 -> wrn_40_1 is not '
          'possible).')
  for seq, who in ((s_keys, 'student'), (t_keys, 'teacher')):
    for a, b in zip(seq[:-1], seq[1:]):
      _check_pair_spatial(info, who, a, b)
  if pair_weights is not None:
    pair_weights = tuple(float(w) for w in pair_weights)
    if len(pair_weights) != len(s_keys) - 1:
      raise ValueError(f'fsp: {len(pair_weights)} pair_weights for {len(s_keys) - 1} pairs '
                       f'of {list(s_keys)}.')

  def loss(ctx: Context):
    return losses.fsp(pick(ctx.student, s_keys), pick(ctx.teacher, t_keys),
                      pair_weights=pair_weights)
  return Term(name='fsp', method='fsp', weight=float(weight), loss=no_aux(loss))


def _check_pair_spatial(info: BuildInfo, who: str, a: str, b: str):
  (ha, wa), (hb, wb) = info.feature(who, a).shape[1:3], info.feature(who, b).shape[1:3]
  if not ((ha >= hb and wa >= wb) or (ha <= hb and wa <= wb)):
    raise ValueError(f'fsp: {who} maps {a!r} ({ha}x{wa}) and {b!r} ({hb}x{wb}) cannot be '
                     'matched by pooling.')


# ----------------------------------------------------------------------------
# Relation-based

@register_method('sp', family='relational', paper='Tung & Mori 2019, Similarity-Preserving '
                 'Knowledge Distillation')
def build_sp(info: BuildInfo, *, weight: float = 3000.0, student_features: FeatureArg = None,
             teacher_features: FeatureArg = None) -> Term:
  """Similarity-preserving KD on the last stage output (RD feat[-2]), weight 3000."""
  s_keys, t_keys = resolve_feature_pair(info, 'sp', student_features, teacher_features,
                         _last_stage(info, 'student'), _last_stage(info, 'teacher'))
  _check_batched(info, 'sp', s_keys, t_keys)

  def loss(ctx: Context):
    return losses.similarity_preserving(pick(ctx.student, s_keys), pick(ctx.teacher, t_keys))
  return Term(name='sp', method='sp', weight=float(weight), loss=no_aux(loss))


def _one_embedding(info, method, student_features, teacher_features):
  s_keys, t_keys = resolve_feature_pair(info, method, student_features, teacher_features, ('pooled',))
  if len(s_keys) != 1:
    raise ValueError(f'{method}: takes one student and one teacher feature, got '
                     f'{list(s_keys)} and {list(t_keys)}.')
  _check_batched(info, method, s_keys, t_keys)
  return s_keys[0], t_keys[0]


def _rkd_term(name, info, weight, student_features, teacher_features, fn):
  ks, kt = _one_embedding(info, name, student_features, teacher_features)

  def loss(ctx: Context):
    return fn(ctx.student[ks], ctx.teacher[kt])
  return Term(name=name, method=name, weight=float(weight), loss=no_aux(loss))


@register_method('rkd', family='relational', paper='Park et al. 2019, Relational Knowledge '
                 'Distillation')
def build_rkd(info: BuildInfo, *, weight: float = 1.0, distance_weight: float = 25.0,
              angle_weight: float = 50.0, student_features: FeatureArg = None,
              teacher_features: FeatureArg = None) -> Term:
  """RKD distance + angle on the pooled vector (RD: 25 D + 50 A, weight 1)."""
  _nonneg('rkd', distance_weight=distance_weight, angle_weight=angle_weight)
  return _rkd_term('rkd', info, weight, student_features, teacher_features,
                   lambda s, t: losses.rkd(s, t, distance_weight=distance_weight,
                                           angle_weight=angle_weight))


@register_method('rkd_d', family='relational', paper='Park et al. 2019, Relational Knowledge '
                 'Distillation (distance term)')
def build_rkd_d(info: BuildInfo, *, weight: float = 25.0, student_features: FeatureArg = None,
                teacher_features: FeatureArg = None) -> Term:
  """RKD distance term alone on the pooled vector, weight 25 (= lambda_D)."""
  return _rkd_term('rkd_d', info, weight, student_features, teacher_features,
                   losses.rkd_distance)


@register_method('rkd_a', family='relational', paper='Park et al. 2019, Relational Knowledge '
                 'Distillation (angle term)')
def build_rkd_a(info: BuildInfo, *, weight: float = 50.0, student_features: FeatureArg = None,
                teacher_features: FeatureArg = None) -> Term:
  """RKD angle term alone on the pooled vector, weight 50 (= lambda_A)."""
  return _rkd_term('rkd_a', info, weight, student_features, teacher_features,
                   losses.rkd_angle)


@register_method('pkt', family='relational', paper='Passalis & Tefas 2018, Learning Deep '
                 'Representations with Probabilistic Knowledge Transfer')
def build_pkt(info: BuildInfo, *, weight: float = 30000.0, student_features: FeatureArg = None,
              teacher_features: FeatureArg = None) -> Term:
  """Probabilistic knowledge transfer on the pooled vector, weight 30000."""
  return _rkd_term('pkt', info, weight, student_features, teacher_features, losses.pkt)
