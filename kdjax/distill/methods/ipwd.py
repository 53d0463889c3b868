"""IPWD (Niu et al. 2022) registration: `ipwd`, two-stage (teacher) or one-stage (on PS-KD).

Synopsis:
  Two-stage (CRD protocol), RD-style CE weight:
      config.distill.ce_weight = 0.1            # CE(z_kd, y) on the student's own head
      config.distill.terms = {'ipwd': dict(method='ipwd', alpha=0.9, temperature=4.0)}
  One-stage on PS-KD (teacher distribution = PS-KD's progressive target):
      config.distill.ce_weight = 0.0
      config.distill.terms = {'ipwd': dict(method='ipwd', teacher_source='pskd', alpha=1.0,
                                           temperature=1.0)}
  (with w = 1 this is exactly PS-KD).
  Any other term with a per-sample loss (`Term.per_sample`: kd, reviewkd):
      term = with_ipw(term, info)      # mean_n w_n l_n + cls_weight * CE(z_cls, y)
  or, in a config, dict(method='ipw', term=dict(method='reviewkd', weight=5.0)).
  (ReviewKD + IPWD, IPWD appendix 2.2, is also reviewkd's ipw=True.)

  The term adds an extra linear head z_cls on stop_gradient(pooled) trained
  with CE (`cls_weight`), and returns
      cls_weight * CE(z_cls, y) + alpha * tau^2 * mean_i w_i KL(p_t^tau || p_kd^tau)_i
  with w from `ipw_weights` (pi = sigmoid(log p_kd(y) -
  log p_cls(y)), w = clip(1/pi, 1, 10) / batch mean, stop_gradient). The
  step's ce_weight * CE(z_kd, y) completes the loss of docs/methods.md.

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

Losses:
IPWD (Niu et al. 2022): inverse-probability-weighted distillation, pure functions.

Synopsis:
  w = ipw_weights(kd_logits, cls_logits, labels)                 # stop-gradient, mean 1
  loss = CE(z_kd, y) + CE(z_cls, y) + alpha * weighted_kd(z_kd, z_t, w, temperature=4.0)

The IPWD appendix gives the structure: a KD-trained output z_kd (the
student's head) and a CE-trained output z_cls (an extra head on the same
features) whose disagreement on the label estimates how well the teacher's
("machine") domain covers each sample. The main-text estimator was not
available, so kdjax fixes it as docs/methods.md states:

  pi_i = p_kd(y_i|x_i) / (p_kd(y_i|x_i) + p_cls(y_i|x_i))
       = sigmoid(log p_kd(y_i) - log p_cls(y_i))                 ('prob_ratio', default)
  w_i  = clip(1 / pi_i, w_min, w_max), then w / mean(w)          (stabilised IPW)

A secondary source reports w = 1 + H(z_cls, y) / H(z_kd, y) ('ce_ratio');
note it up-weights samples the KD head already fits, the opposite of the
stated intent. Both are clipped and normalised the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from kdjax import losses
from kdjax.distill import api
from kdjax.distill.api import BuildInfo, Context, Needs, Term, register_method
from kdjax.models import common
from kdjax.distill.methods.pskd import pskd_memory_init, pskd_objective

Array = jax.Array


ESTIMATORS = ('prob_ratio', 'ce_ratio')


def _log_p_label(logits: Array, labels: Array) -> Array:
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def propensity(kd_logits: Array, cls_logits: Array, labels: Array) -> Array:
  """pi = sigmoid(log p_kd(y) - log p_cls(y)) at tau 1, per sample [N] (no gradient)."""
  kd_logits, cls_logits = jax.lax.stop_gradient((kd_logits, cls_logits))
  return jax.nn.sigmoid(_log_p_label(kd_logits, labels) - _log_p_label(cls_logits, labels))


def ipw_weights(kd_logits: Array, cls_logits: Array, labels: Array, *,
                estimator: str = 'prob_ratio', w_min: float = 1.0, w_max: float = 10.0,
                normalize: bool = True) -> Array:
  """Per-sample weights [N], clipped to [w_min, w_max], normalised to batch mean 1, stopped.

  Args:
    kd_logits: [N, K] the KD-trained output z_kd.
    cls_logits: [N, K] the CE-trained output z_cls.
    labels: [N] integer labels.
    estimator: 'prob_ratio' (w = 1 / pi) or 'ce_ratio' (w = 1 + H_cls / H_kd).
    w_min, w_max: clipping range applied before normalisation.
    normalize: divide by the batch mean (stabilised IPW).

  Returns:
    [N] float32 weights with no gradient.
  """
  chex.assert_rank([kd_logits, cls_logits], 2)
  chex.assert_equal_shape([kd_logits, cls_logits])
  kd_logits, cls_logits = jax.lax.stop_gradient((kd_logits, cls_logits))
  if estimator == 'prob_ratio':
    w = 1.0 / propensity(kd_logits, cls_logits, labels)
  elif estimator == 'ce_ratio':
    h_kd = optax.softmax_cross_entropy_with_integer_labels(kd_logits.astype(jnp.float32), labels)
    h_cls = optax.softmax_cross_entropy_with_integer_labels(cls_logits.astype(jnp.float32), labels)
    w = 1.0 + h_cls / jnp.maximum(h_kd, 1e-7)
  else:
    raise ValueError(f'unknown IPWD estimator {estimator!r}; known: {ESTIMATORS}.')
  w = jnp.clip(w, w_min, w_max)
  if normalize:
    w = w / jnp.mean(w)
  return jax.lax.stop_gradient(w)


def weighted_kd(student_logits: Array, teacher: Array, weights: Array, *,
                temperature: float = 4.0, teacher_is_probs: bool = False) -> Array:
  """tau^2 * mean_i w_i KL(p_t^tau || p_s^tau)_i.

  Args:
    student_logits: [N, K].
    teacher: [N, K] teacher logits, or a probability distribution when
      `teacher_is_probs` (e.g. PS-KD's progressive target); a distribution q
      is tempered as softmax(log q / tau).
    weights: [N] per-sample weights (stopped).
    temperature: tau.

  Returns:
    A scalar.
  """
  chex.assert_rank([student_logits, teacher], 2)
  chex.assert_equal_shape([student_logits, teacher])
  teacher = jax.lax.stop_gradient(teacher).astype(jnp.float32)
  if teacher_is_probs:
    teacher = jnp.log(jnp.maximum(teacher, 1e-12))
  log_pt = jax.nn.log_softmax(teacher / temperature, axis=-1)
  log_ps = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)
  return temperature ** 2 * jnp.mean(jax.lax.stop_gradient(weights) * kl)


class ExtraHead(nn.Module):
  """IPWD's extra linear classifier (PyTorch nn.Linear init, as every model's `head`)."""
  num_classes: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_classes, kernel_init=common.dense_kernel_init,
                    bias_init=nn.initializers.zeros, name='fc')(x)


IPW_HEAD = 'ipw_head'


def with_ipw(term: Term, info: BuildInfo, *, estimator: str = 'prob_ratio', w_min: float = 1.0,
             w_max: float = 10.0, normalize: bool = True, cls_weight: float = 1.0,
             warmup_epochs: float = 0.0, feature: str = 'pooled',
             logits_feature: str = 'logits') -> Term:
  """`term` with its per-sample loss weighted by IPWD's w (IPWD appendix 2.2, ReviewKD + IPWD).

  The wrapped term's loss is
      mean_n w_n l_n + cls_weight * CE(z_cls, y)
  with l_n = term.per_sample, z_cls an extra linear head on
  stop_gradient(student[feature]) (its parameters at aux['params']['ipw_head']
  next to the term's own) and w = ipw_weights(student[logits_feature], z_cls,
  y) (clipped to [w_min, w_max], normalised to batch mean 1 when `normalize`,
  1 before `warmup_epochs`). The result has a per-sample loss too
  (w_n l_n + cls_weight * CE_n). Name, weight, needs and other variables stay
  the term's.

  Raises:
    ValueError: the term has no per-sample loss, or bad options / features.
  """
  if term.per_sample is None:
    raise ValueError(f'IPWD weighting needs a per-sample loss, and term {term.name!r} '
                     f'({term.method}) does not define one (Term.per_sample).')
  if estimator not in ESTIMATORS:
    raise ValueError(f'ipw: estimator must be one of {ESTIMATORS}, got {estimator!r}.')
  if not 0 < w_min <= w_max:
    raise ValueError(f'ipw: need 0 < w_min <= w_max, got {w_min!r}, {w_max!r}.')
  if not (isinstance(warmup_epochs, (int, float)) and warmup_epochs >= 0):
    raise ValueError(f'ipw: warmup_epochs must be >= 0, got {warmup_epochs!r}.')
  f_shape = info.feature('student', feature).shape
  if len(f_shape) != 2:
    raise ValueError(f'ipw: the extra head reads a [N, C] vector; student {feature!r} has '
                     f'shape {tuple(f_shape)}.')
  k_shape = info.feature('student', logits_feature).shape
  if len(k_shape) != 2 or k_shape[-1] != info.num_classes:
    raise ValueError(f'ipw: {logits_feature!r} must be [N, {info.num_classes}] logits, got '
                     f'{tuple(k_shape)}.')
  head = ExtraHead(info.num_classes)

  def init(rng, ctx: Context):
    out = dict(term.init(rng, ctx)) if term.init is not None else {}
    params = dict(out.get('params', {}))
    if IPW_HEAD in params:
      raise ValueError(f'ipw: term {term.name!r} already has parameters named {IPW_HEAD!r}.')
    params[IPW_HEAD] = dict(head.init(jax.random.fold_in(rng, 7), ctx.student[feature]))['params']
    out['params'] = params
    return out

  def per_sample(aux, ctx: Context):
    inner = dict(aux)
    params = dict(aux['params'])
    head_params = params.pop(IPW_HEAD)
    inner['params'] = params
    values, metrics, state = term.per_sample(inner, ctx)
    # The head estimates the propensity; it must not train the backbone.
    z_cls = head.apply({'params': head_params}, jax.lax.stop_gradient(ctx.student[feature]))
    ce = optax.softmax_cross_entropy_with_integer_labels(z_cls.astype(jnp.float32), ctx.labels)
    # A masked batch normalises w over its valid rows (the batch of the valid rows alone).
    w = ipw_weights(ctx.student[logits_feature], z_cls, ctx.labels, estimator=estimator,
                    w_min=w_min, w_max=w_max, normalize=normalize and ctx.mask is None)
    if normalize and ctx.mask is not None:
      w = w / losses.masked_mean(w, ctx.mask)
    if warmup_epochs > 0:
      w = jnp.where(ctx.progress >= warmup_epochs, w, jnp.ones_like(w))
    correct = (jnp.argmax(z_cls, -1) == ctx.labels).astype(jnp.float32)
    if ctx.mask is None:
      metrics = dict(metrics, ce_cls=jnp.mean(ce), w_max=jnp.max(w), w_min=jnp.min(w),
                     cls_accuracy=jnp.mean(correct))
    else:
      valid = ctx.mask > 0
      metrics = dict(metrics, ce_cls=losses.masked_mean(ce, ctx.mask),
                     w_max=jnp.max(jnp.where(valid, w, -jnp.inf)),
                     w_min=jnp.min(jnp.where(valid, w, jnp.inf)),
                     cls_accuracy=losses.masked_mean(correct, ctx.mask))
    return w * values + cls_weight * ce, metrics, state

  def loss(aux, ctx: Context):
    values, metrics, state = per_sample(aux, ctx)
    return jnp.mean(values), metrics, state
  return dataclasses.replace(term, loss=loss, init=init, per_sample=per_sample)


@register_method('ipwd', family='logits', paper='Niu et al. 2022, Respecting Transfer Gap in '
                 'Knowledge Distillation (IPWD); estimator fixed as in docs/methods.md')
def build_ipwd(info: BuildInfo, *, weight: float = 1.0, alpha: float | None = None,
               temperature: float | None = None, estimator: str = 'prob_ratio', w_min: float = 1.0,
               w_max: float = 10.0, normalize: bool = True, warmup_epochs: float = 0.0,
               cls_weight: float = 1.0, detach_features: bool = True,
               feature: str = 'pooled', logits_feature: str = 'logits',
               cls_feature: str | None = None, teacher_source: str = 'teacher',
               alpha_T: float = 0.8, dagger: bool = False) -> Term:  # noqa: N803
  """Inverse-probability-weighted KD with an extra CE head (the estimator of docs/methods.md).

  alpha / temperature default to 0.9 / 4 with a teacher (RD's KD) and to 1 / 1
  with teacher_source='pskd' (then w = 1 gives PS-KD exactly).
  estimator: 'prob_ratio' (default) or 'ce_ratio'. warmup_epochs: weights are
  1 until this many epochs of the stage are done. detach_features=False lets
  the extra head's CE train the backbone too. teacher_source: 'teacher' (a
  trained teacher's logits) or 'pskd' (one-stage: PS-KD's progressive target,
  with its own per-sample memory; alpha_T as PS-KD). dagger: IPWD-dagger
  (appendix Table 4; a KD-only extra head gives the propensity's KD-aware output).
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f'ipwd: estimator must be one of {ESTIMATORS}, got {estimator!r}.')
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
  head = ExtraHead(info.num_classes)

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
      kd_dag = weighted_kd(z_aware, ctx.teacher['logits'], jnp.ones(z_aware.shape[:1]),
                             temperature=temperature)
      extra = alpha * kd_dag
      metrics['kd_dagger'] = kd_dag
    w = ipw_weights(z_aware, z_cls, ctx.labels, estimator=estimator, w_min=w_min, w_max=w_max,
                      normalize=normalize)
    if warmup_epochs > 0:
      w = jnp.where(ctx.progress >= warmup_epochs, w, jnp.ones_like(w))
    state = {}
    if use_pskd:
      target, alpha_t, memory = pskd_objective(aux['pskd']['memory'], z_kd, ctx, alpha_T=alpha_T)
      state['pskd'] = {'memory': memory}
      metrics['alpha_t'] = alpha_t
      kd = weighted_kd(z_kd, target, w, temperature=temperature, teacher_is_probs=True)
    else:
      kd = weighted_kd(z_kd, ctx.teacher['logits'], w, temperature=temperature)
    metrics.update(ce_cls=ce_cls, kd=kd, w_max=jnp.max(w), w_min=jnp.min(w),
                   cls_accuracy=jnp.mean(jnp.argmax(z_cls, -1) == ctx.labels))
    return cls_weight * ce_cls + alpha * kd + extra, metrics, state

  return Term(name='ipwd', method='ipwd', weight=float(weight), loss=loss,
              init=init if (cls_feature is None or use_pskd or dagger) else None,
              needs_teacher=not use_pskd, needs=Needs(index=use_pskd))


@register_method('ipw', family='logits', paper='Niu et al. 2022, Respecting Transfer Gap in '
                 'Knowledge Distillation (IPWD), appendix 2.2: IPWD weights on any loss')
def build_ipw(info: BuildInfo, *, term: Mapping[str, Any] | None = None,
              estimator: str = 'prob_ratio', w_min: float = 1.0, w_max: float = 10.0,
              normalize: bool = True, cls_weight: float = 1.0, warmup_epochs: float = 0.0,
              feature: str = 'pooled', logits_feature: str = 'logits') -> Term:
  """IPWD's per-sample weights on another term's per-sample loss (`with_ipw`).

  term: the wrapped entry, e.g. dict(method='reviewkd', weight=5.0) (default:
  RD's KD, dict(method='kd', weight=0.9, temperature=4.0)); its weight is the
  result's weight.
  """
  spec = dict(term) if term is not None else dict(method='kd', weight=0.9, temperature=4.0)
  if spec.get('method') == 'ipw':
    raise ValueError('ipw: the wrapped term is already IPW-weighted.')
  inner = api.build_term(spec, info)
  if len(inner) != 1:
    raise ValueError(f'ipw: method {spec.get("method")!r} builds {len(inner)} terms; wrap one.')
  return with_ipw(inner[0], info, estimator=estimator, w_min=w_min, w_max=w_max,
                  normalize=normalize, cls_weight=cls_weight, warmup_epochs=warmup_epochs,
                  feature=feature, logits_feature=logits_feature)
