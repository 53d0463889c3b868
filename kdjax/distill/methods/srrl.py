"""SRRL (seed 003) registration: `srrl`.

Synopsis:
  config.distill.terms = {'srrl': dict(method='srrl', alpha=1.0, beta=1.0)}   # ce_weight 1

  A connector r (1x1 conv C_s -> C_t, no bias, N(0, sqrt(2/C_t)) init, BN,
  ReLU; official `transfer_conv`) maps the student's last map (before
  pooling; WRN: after the final BN+ReLU) to the teacher's width. With
  v_s = GAP(r(h_s)) and v_t the teacher's pooled vector:
      L_FM = mean (v_s - v_t)^2
      L_SR = mean (W_T v_s + b_T - z_t)^2      (teacher head frozen; 'ce'/'kl' options)
  loss = alpha L_FM + beta L_SR. The teacher's classifier is read from
  ctx.teacher_variables['params'][head] under stop_gradient; it is not part of
  the optimised state, so it is never updated.
"""

from __future__ import annotations

import jax.numpy as jnp

from kdjax.distill import ie_modules
from kdjax.distill.api import BuildInfo, Context, Term, register_method
from kdjax.losses import srrl as L


@register_method('srrl', family='features', paper='Yang et al. 2021, Knowledge Distillation '
                 'via Softmax Regression Representation Learning (SRRL)')
def build_srrl(info: BuildInfo, *, weight: float = 1.0, alpha: float = 1.0, beta: float = 1.0,
               sr_loss: str = 'mse', temperature: float = 4.0,
               student_feature: str = 'last_map', teacher_feature: str = 'pooled',
               teacher_head: str = 'head') -> Term:
  """L_FM + L_SR through the teacher's frozen classifier (official: alpha = beta = 1, MSE)."""
  s_shape = info.feature('student', student_feature).shape
  t_shape = info.feature('teacher', teacher_feature).shape
  t_logits = info.feature('teacher', 'logits').shape
  if len(s_shape) != 4:
    raise ValueError(f'srrl: student feature {student_feature!r} must be the last NHWC map '
                     f'(before pooling), got shape {tuple(s_shape)}.')
  if len(t_shape) != 2:
    raise ValueError(f'srrl: teacher feature {teacher_feature!r} must be the pooled vector '
                     f'that feeds the teacher head, got shape {tuple(t_shape)}.')
  if sr_loss not in L.SR_KINDS:
    raise ValueError(f'srrl: sr_loss must be one of {L.SR_KINDS}, got {sr_loss!r}.')
  for k, v in dict(alpha=alpha, beta=beta).items():
    if not (isinstance(v, (int, float)) and v >= 0):
      raise ValueError(f'srrl: {k} must be >= 0, got {v!r}.')
  c_t = int(t_shape[-1])
  connector = ie_modules.SRRLConnector(c_t)

  def init(rng, ctx: Context):
    return dict(connector.init(rng, ctx.student[student_feature], train=False))

  def loss(aux, ctx: Context):
    head = ctx.teacher_variables['params'][teacher_head]
    if head['kernel'].shape != (c_t, t_logits[-1]):
      raise ValueError(f'srrl: teacher head {teacher_head!r} has kernel {head["kernel"].shape}, '
                       f'expected {(c_t, t_logits[-1])}.')
    h, stats = ie_modules.apply_bn_module(
        connector, {'params': aux['params'], 'batch_stats': aux['batch_stats']},
        ctx.student[student_feature], train=ctx.train)
    v_s = jnp.mean(h, axis=(1, 2))
    l_fm = L.feature_matching(v_s, ctx.teacher[teacher_feature])
    z_sc = L.teacher_head(v_s, head['kernel'], head.get('bias'))
    l_sr = L.softmax_regression(z_sc, ctx.teacher['logits'], ctx.labels, kind=sr_loss,
                                temperature=temperature)
    return alpha * l_fm + beta * l_sr, {'fm': l_fm, 'sr': l_sr}, {'batch_stats': stats}

  return Term(name='srrl', method='srrl', weight=float(weight), loss=loss, init=init)
