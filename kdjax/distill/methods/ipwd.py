"""IPWD (seed 004) registration: `ipwd`, two-stage (teacher) or one-stage (on PS-KD).

Synopsis:
  Two-stage (CRD protocol), RD-style CE weight:
      config.distill.ce_weight = 0.1            # CE(z_kd, y) on the student's own head
      config.distill.terms = {'ipwd': dict(method='ipwd', alpha=0.9, temperature=4.0)}
  One-stage on PS-KD (teacher distribution = PS-KD's progressive target):
      config.distill.ce_weight = 0.0
      config.distill.terms = {'ipwd': dict(method='ipwd', teacher_source='pskd', alpha=1.0,
                                           temperature=1.0)}
  (with w = 1 this is exactly PS-KD).

  The term adds an extra linear head z_cls on stop_gradient(pooled) trained
  with CE (`cls_weight`), and returns
      cls_weight * CE(z_cls, y) + alpha * tau^2 * mean_i w_i KL(p_t^tau || p_kd^tau)_i
  with w from `kdjax.losses.ipwd.ipw_weights` (pi = sigmoid(log p_kd(y) -
  log p_cls(y)), w = clip(1/pi, 1, 10) / batch mean, stop_gradient). The
  step's ce_weight * CE(z_kd, y) completes METHODS.md's loss.

  IPWD* (the CE-aware output from a separate model, appendix Table 3): train
  a cohort `model.cohort = (student, student)` and set
  `cls_feature='member1/logits'`: member 1 is then a second network trained
  with CE alone (the term computes it), member 0 is the distilled student
  (the cohort's main logits), and no extra head is created.

  IPWD-dagger (appendix Table 4, `dagger=True`): the KD-aware output used in the
  propensity comes from a *third* linear head z_dag (same type as the CE head,
  on the same, by default stop_gradient'ed, pooled vector) "trained only with
  the original distillation loss, which simply mimics the teacher's output
  without ground-truth annotations". The term adds
      alpha * tau^2 * mean_i KL(p_t^tau || p_dag^tau)_i      (unweighted)
  and computes w from (z_dag, z_cls) instead of (z_kd, z_cls); the student's own
  head is still trained with ce_weight * CE + alpha * weighted KD, as in IPWD.
  Assumptions (the appendix gives no formula): "original distillation loss" =
  the plain, unweighted KD with IPWD's alpha and tau (a weighted one would be
  circular); the dagger head reads the same features as the CE head
  (`detach_features` applies to both). Variables: with dagger the extra heads'
  params are nested as {'cls': ..., 'dagger': ...} (without: the CE head's, flat).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from kdjax.distill import ie_modules
from kdjax.distill.api import BuildInfo, Context, Term, register_method
from kdjax.distill.methods.pskd import pskd_memory_init, pskd_objective
from kdjax.losses import ipwd as L


@register_method('ipwd', family='logits', paper='Niu et al. 2022, Respecting Transfer Gap in '
                 'Knowledge Distillation (IPWD); estimator fixed in METHODS.md')
def build_ipwd(info: BuildInfo, *, weight: float = 1.0, alpha: float | None = None,
               temperature: float | None = None, estimator: str = 'prob_ratio', w_min: float = 1.0,
               w_max: float = 10.0, normalize: bool = True, warmup_epochs: float = 0.0,
               cls_weight: float = 1.0, detach_features: bool = True,
               feature: str = 'pooled', logits_feature: str = 'logits',
               cls_feature: str | None = None, teacher_source: str = 'teacher',
               alpha_T: float = 0.8, dagger: bool = False) -> Term:  # noqa: N803
  """Inverse-probability-weighted KD with an extra CE head (METHODS.md estimator).

  alpha / temperature default to 0.9 / 4 with a teacher (RD's KD) and to 1 / 1
  with teacher_source='pskd' (then w = 1 gives PS-KD exactly).
  estimator: 'prob_ratio' (default) or 'ce_ratio'. warmup_epochs: weights are
  1 until this many epochs of the stage are done. detach_features=False lets
  the extra head's CE train the backbone too. teacher_source: 'teacher' (a
  trained teacher's logits) or 'pskd' (one-stage: PS-KD's progressive target,
  with its own per-sample memory; alpha_T as PS-KD). dagger: IPWD-dagger
  (appendix Table 4; a KD-only extra head gives the propensity's KD-aware output).
  """
  if estimator not in L.ESTIMATORS:
    raise ValueError(f'ipwd: estimator must be one of {L.ESTIMATORS}, got {estimator!r}.')
  if teacher_source not in ('teacher', 'pskd'):
    raise ValueError(f"ipwd: teacher_source must be 'teacher' or 'pskd', got {teacher_source!r}.")
  if not (0 < w_min <= w_max):
    raise ValueError(f'ipwd: need 0 < w_min <= w_max, got {w_min!r}, {w_max!r}.')
  use_pskd = teacher_source == 'pskd'
  if alpha is None:
    alpha = 1.0 if use_pskd else 0.9
  if temperature is None:
    temperature = 1.0 if use_pskd else 4.0
  if not temperature > 0:
    raise ValueError(f'ipwd: temperature must be > 0, got {temperature!r}.')
  k_shape = info.feature('student', logits_feature).shape
  if len(k_shape) != 2 or k_shape[-1] != info.num_classes:
    raise ValueError(f'ipwd: {logits_feature!r} must be [N, {info.num_classes}] logits, got '
                     f'{tuple(k_shape)}.')
  if teacher_source == 'teacher':
    t_shape = info.feature('teacher', 'logits').shape
    if tuple(t_shape[1:]) != tuple(k_shape[1:]):
      raise ValueError(f'ipwd: student {tuple(k_shape)} and teacher {tuple(t_shape)} logits '
                       'differ.')
  if dagger and use_pskd:
    raise ValueError("ipwd: dagger (a KD-only head) needs teacher_source='teacher'.")
  if cls_feature is None or dagger:
    f_shape = info.feature('student', feature).shape
    if len(f_shape) != 2:
      raise ValueError(f'ipwd: the extra head reads a pooled vector; {feature!r} has shape '
                       f'{tuple(f_shape)}.')
  if cls_feature is not None:
    c_shape = info.feature('student', cls_feature).shape
    if tuple(c_shape[1:]) != tuple(k_shape[1:]):
      raise ValueError(f'ipwd: cls_feature {cls_feature!r} {tuple(c_shape)} must be logits like '
                       f'{logits_feature!r} {tuple(k_shape)}.')
  head = ie_modules.ExtraHead(info.num_classes)

  def init(rng, ctx: Context):
    out = {}
    if dagger:
      out['params'] = {'dagger': dict(head.init(jax.random.fold_in(rng, 1),
                                                ctx.student[feature]))['params']}
      if cls_feature is None:
        out['params']['cls'] = dict(head.init(rng, ctx.student[feature]))['params']
    elif cls_feature is None:
      out['params'] = dict(head.init(rng, ctx.student[feature]))['params']
    if use_pskd:
      out['pskd'] = {'memory': pskd_memory_init(info.num_train, info.num_classes)}
    return out

  def loss(aux, ctx: Context):
    z_kd = ctx.student[logits_feature]
    f = None
    if cls_feature is None or dagger:
      f = ctx.student[feature]
      if detach_features:  # the extra heads are estimators, not training signals
        f = jax.lax.stop_gradient(f)
    if cls_feature is None:
      cls_params = aux['params']['cls'] if dagger else aux['params']
      z_cls = head.apply({'params': cls_params}, f)
    else:
      z_cls = ctx.student[cls_feature]
    ce_cls = optax.softmax_cross_entropy_with_integer_labels(
        z_cls.astype(jnp.float32), ctx.labels).mean()
    extra, metrics = 0.0, {}
    z_aware = z_kd
    if dagger:  # IPWD-dagger: the KD-aware output is a head trained with plain KD only
      z_aware = head.apply({'params': aux['params']['dagger']}, f)
      kd_dag = L.weighted_kd(z_aware, ctx.teacher['logits'], jnp.ones(z_aware.shape[:1]),
                             temperature=temperature)
      extra = alpha * kd_dag
      metrics['kd_dagger'] = kd_dag
    w = L.ipw_weights(z_aware, z_cls, ctx.labels, estimator=estimator, w_min=w_min, w_max=w_max,
                      normalize=normalize)
    if warmup_epochs > 0:
      w = jnp.where(ctx.progress >= warmup_epochs, w, jnp.ones_like(w))
    state = {}
    if use_pskd:
      target, alpha_t, memory = pskd_objective(aux['pskd']['memory'], z_kd, ctx, alpha_T=alpha_T)
      state['pskd'] = {'memory': memory}
      metrics['alpha_t'] = alpha_t
      kd = L.weighted_kd(z_kd, target, w, temperature=temperature, teacher_is_probs=True)
    else:
      kd = L.weighted_kd(z_kd, ctx.teacher['logits'], w, temperature=temperature)
    metrics.update(ce_cls=ce_cls, kd=kd, w_max=jnp.max(w), w_min=jnp.min(w),
                   cls_accuracy=jnp.mean(jnp.argmax(z_cls, -1) == ctx.labels))
    return cls_weight * ce_cls + alpha * kd + extra, metrics, state

  return Term(name='ipwd', method='ipwd', weight=float(weight), loss=loss,
              init=init if (cls_feature is None or use_pskd or dagger) else None,
              needs_teacher=not use_pskd)
