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

Earlier layers (seed 003 Table 1, last three rows; `layers=('stage1', 'stage2', 'last')`):
  For every entry of `layers` a connector of the same type maps the student's map
  at that position to the teacher's channels there. 'last' is the default position
  above (student `student_feature`, teacher `teacher_feature` and head). For
  'stageK' (both nets' `stageK` maps, which must have the same H, W):
      h = r_K(s_stageK);  L_FM,K = mean (GAP(h) - GAP(t_stageK))^2
      L_SR,K = mean (T_{>K}(AdaIN(h, t_stageK)) - z_t)^2     ('ce' / 'kl' likewise)
  where T_{>K} is the rest of the teacher (`model.forward_from(., K)`: later
  stages, final BN/ReLU, pooling, head) in eval mode with the teacher's variables
  from ctx.teacher_variables under stop_gradient (never optimised). The paper's
  AdaIN "transfers the mean feature of the student ... to the corresponding layer
  of the teacher"; we read it as AdaIN(x = connector output, y = teacher map),
  i.e. the student's normalised map restyled with the teacher's per-channel
  statistics, then run through the frozen remainder. The loss is the sum over
  layers of alpha L_FM,K + beta L_SR,K.

  The builder does not receive the teacher's module, only `info.teacher_arch`:
  it rebuilds it with `kdjax.models.create(info.teacher_arch, info.num_classes)`
  (model kwargs of the teacher's config are not known here, which is fine for the
  WRN / ResNet families that have `forward_from`). With `layers=('last',)` (the
  default) the auxiliary variables are the single connector's, as before; with
  several layers they are nested under the layer names.

  Naming: WRN (and seed 003) call the stem conv1 and the three groups conv2,
  conv3, conv4, so Table 1's conv2 / conv3 / conv2+3+4 are kdjax's stage1 /
  stage2 / (stage1, stage2, last); `seed_configs.srrl(..., 'layers=conv2')` does
  that mapping.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kdjax import models

from kdjax.distill import ie_modules
from kdjax.distill.api import BuildInfo, Context, Term, register_method
from kdjax.losses import srrl as L


@register_method('srrl', family='features', paper='Yang et al. 2021, Knowledge Distillation '
                 'via Softmax Regression Representation Learning (SRRL)')
def build_srrl(info: BuildInfo, *, weight: float = 1.0, alpha: float = 1.0, beta: float = 1.0,
               sr_loss: str = 'mse', temperature: float = 4.0,
               student_feature: str = 'last_map', teacher_feature: str = 'pooled',
               teacher_head: str = 'head', layers=('last',)) -> Term:
  """L_FM + L_SR through the teacher's frozen classifier (official: alpha = beta = 1, MSE).

  `layers`: positions ('last' and/or 'stageK'); see the module docstring.
  """
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
  layers = _parse_layers(layers)
  c_t = int(t_shape[-1])
  specs = {}  # layer -> (student key, teacher key, stage index or None, connector)
  teacher_model = None
  for layer in layers:
    if layer == 'last':
      specs[layer] = (student_feature, teacher_feature, None, ie_modules.SRRLConnector(c_t))
      continue
    k = int(layer[len('stage'):])
    s_map = info.feature('student', layer).shape
    t_map = info.feature('teacher', layer).shape
    if len(s_map) != 4 or len(t_map) != 4:
      raise ValueError(f'srrl: layer {layer!r} needs NHWC maps, got student {tuple(s_map)}, '
                       f'teacher {tuple(t_map)}.')
    if tuple(s_map[1:3]) != tuple(t_map[1:3]):
      raise ValueError(f'srrl: layer {layer!r}: the student map ({info.student_arch}, '
                       f'{tuple(s_map)}) and the teacher map ({info.teacher_arch}, {tuple(t_map)}) '
                       f'differ in H, W; AdaIN into the teacher needs the same spatial size.')
    if teacher_model is None:
      teacher_model = _teacher_model(info)
    specs[layer] = (layer, layer, k, ie_modules.SRRLConnector(int(t_map[-1])))
  single = layers == ('last',)

  def init(rng, ctx: Context):
    if single:
      return dict(specs['last'][3].init(rng, ctx.student[student_feature], train=False))
    out = {'params': {}, 'batch_stats': {}}
    for i, (layer, (s_key, _, _, conn)) in enumerate(specs.items()):
      v = conn.init(jax.random.fold_in(rng, i), ctx.student[s_key], train=False)
      out['params'][layer] = v['params']
      out['batch_stats'][layer] = v['batch_stats']
    return out

  def layer_loss(layer, variables, ctx: Context):
    s_key, t_key, k, conn = specs[layer]
    h, stats = ie_modules.apply_bn_module(conn, variables, ctx.student[s_key], train=ctx.train)
    v_s = jnp.mean(h, axis=(1, 2))
    t_feat = jax.lax.stop_gradient(ctx.teacher[t_key])
    if k is None:
      head = ctx.teacher_variables['params'][teacher_head]
      if head['kernel'].shape != (c_t, t_logits[-1]):
        raise ValueError(f'srrl: teacher head {teacher_head!r} has kernel {head["kernel"].shape}, '
                         f'expected {(c_t, t_logits[-1])}.')
      l_fm = L.feature_matching(v_s, t_feat)
      z_sc = L.teacher_head(v_s, head['kernel'], head.get('bias'))
    else:
      l_fm = L.feature_matching(v_s, jnp.mean(t_feat, axis=(1, 2)))
      tvars = jax.lax.stop_gradient({'params': ctx.teacher_variables['params'],
                                     'batch_stats': ctx.teacher_variables['batch_stats']})
      z_sc = teacher_model.apply(tvars, L.adain(h, t_feat), k, train=False,
                                 method='forward_from')
    l_sr = L.softmax_regression(z_sc, ctx.teacher['logits'], ctx.labels, kind=sr_loss,
                                temperature=temperature)
    return l_fm, l_sr, stats

  def loss(aux, ctx: Context):
    if single:
      l_fm, l_sr, stats = layer_loss(
          'last', {'params': aux['params'], 'batch_stats': aux['batch_stats']}, ctx)
      return alpha * l_fm + beta * l_sr, {'fm': l_fm, 'sr': l_sr}, {'batch_stats': stats}
    total, metrics, new_stats = 0.0, {}, {}
    fm_sum, sr_sum = 0.0, 0.0
    for layer in specs:
      l_fm, l_sr, new_stats[layer] = layer_loss(
          layer, {'params': aux['params'][layer], 'batch_stats': aux['batch_stats'][layer]}, ctx)
      total = total + alpha * l_fm + beta * l_sr
      fm_sum, sr_sum = fm_sum + l_fm, sr_sum + l_sr
      metrics[f'fm_{layer}'], metrics[f'sr_{layer}'] = l_fm, l_sr
    metrics['fm'], metrics['sr'] = fm_sum, sr_sum
    return total, metrics, {'batch_stats': new_stats}

  return Term(name='srrl', method='srrl', weight=float(weight), loss=loss, init=init)


def _parse_layers(layers) -> tuple[str, ...]:
  """('last',) / ('stage1', 'last') / 'stage1,stage2,last' -> a tuple of unique layer names."""
  if isinstance(layers, str):
    layers = [p for p in layers.replace('+', ',').split(',') if p.strip()]
  out = tuple(str(p).strip() for p in layers)
  if not out:
    raise ValueError('srrl: layers must name at least one position.')
  for p in out:
    if p != 'last' and not (p.startswith('stage') and p[len('stage'):].isdigit()):
      raise ValueError(f"srrl: unknown layer {p!r}; use 'last' or 'stageK' (K = 1, 2, ...).")
  if len(set(out)) != len(out):
    raise ValueError(f'srrl: duplicate layers in {out}.')
  return out


def _teacher_model(info: BuildInfo):
  """The teacher's module (for `forward_from`), rebuilt from `info.teacher_arch`."""
  if not info.teacher_arch:
    raise ValueError('srrl: layers other than "last" need BuildInfo.teacher_arch to rebuild the '
                     'teacher for its forward_from (L_SR through the rest of the teacher).')
  model = models.create(info.teacher_arch, info.num_classes)
  if not hasattr(model, 'forward_from'):
    raise ValueError(f'srrl: teacher {info.teacher_arch!r} has no forward_from(h, stage); '
                     f'L_SR at earlier layers supports the WRN and ResNet families.')
  return model
