"""SRRL (Yang et al. 2021) registration: `srrl`.

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

Earlier layers (the SRRL paper Table 1, last three rows; `layers=('stage1', 'stage2', 'last')`):
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

  The builder does not receive the teacher's module, only its spec
  (`info.teacher_spec`, whose `has_forward_from` says whether this works): it
  rebuilds it with `kdjax.models.create(info.teacher_arch, info.num_classes)`
  (model kwargs of the teacher's config are not known here, which is fine for the
  WRN / ResNet families that have `forward_from`). With `layers=('last',)` (the
  default) the auxiliary variables are the single connector's, as before; with
  several layers they are nested under the layer names.

  Naming: WRN (and the SRRL paper) call the stem conv1 and the three groups conv2,
  conv3, conv4, so Table 1's conv2 / conv3 / conv2+3+4 are kdjax's stage1 /
  stage2 / (stage1, stage2, last); the `srrl` config module's 'layers=conv2' does
  that mapping.

Losses:
SRRL (Yang et al. 2021): feature matching + softmax regression through the teacher's classifier.

Synopsis:
  h = connector(student_last_map)                      # 1x1 conv + BN + ReLU (C_s -> C_t)
  v_s = mean_hw(h); v_t = teacher 'pooled'
  l_fm = feature_matching(v_s, v_t)
  z_sc = apply_teacher_head(v_s, kernel_t, bias_t)     # frozen teacher FC
  l_sr = softmax_regression(z_sc, teacher_logits, labels, kind='mse')
  loss = alpha * l_fm + beta * l_sr

Sources: the SRRL paper eqs. (3), (4), (7), (8) and Table 9; official code
jingyang2017/KD_SRRL and jingyang2017/SRD_ossl (`transfer_conv`, MSE with
mean reduction for both terms).
"""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from kdjax import losses
from kdjax import models
from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Needs, Term, register_method
from kdjax.distill.methods import kd as kd_lib
from kdjax.models import common, initializers

Array = jax.Array


SR_KINDS = ('mse', 'ce', 'kl')


def feature_matching(student_vec: Array, teacher_vec: Array, mask: Array | None = None) -> Array:
  """L_FM = mean over N*C_t of (v_s - v_t)^2 (official code; the paper sums over HW).

  With a 0/1 `mask` [N] the mean runs over the valid rows only.
  """
  chex.assert_rank([student_vec, teacher_vec], 2)
  chex.assert_equal_shape([student_vec, teacher_vec])
  d = student_vec.astype(jnp.float32) - jax.lax.stop_gradient(teacher_vec).astype(jnp.float32)
  return losses.masked_mean(d * d, mask)


def apply_teacher_head(vec: Array, kernel: Array, bias: Array | None) -> Array:
  """z = vec @ W_T + b_T with the teacher's classifier frozen (stop_gradient on W_T, b_T).

  Gradients flow into `vec` (the connector and the student), never into W_T, b_T.
  """
  chex.assert_rank([vec, kernel], 2)
  z = vec.astype(jnp.float32) @ jax.lax.stop_gradient(kernel).astype(jnp.float32)
  if bias is not None:
    z = z + jax.lax.stop_gradient(bias).astype(jnp.float32)
  return z


def softmax_regression(z_sc: Array, teacher_logits: Array, labels: Array | None = None, *,
                       kind: str = 'mse', temperature: float = 4.0,
                       mask: Array | None = None) -> Array:
  """L_SR on the student's features classified by the teacher's head.

  'mse': mean over N*K of (z_sc - z_t)^2 (eq. 7, official, best in Table 9);
  'ce':  CE(z_sc, y) (eq. 4);
  'kl':  tau^2 KL(p_t^tau || p_sc^tau) (Table 9's KL variant).
  With a 0/1 `mask` [N] each mean over N runs over the valid rows only.
  """
  chex.assert_rank([z_sc, teacher_logits], 2)
  chex.assert_equal_shape([z_sc, teacher_logits])
  zt = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
  if kind == 'mse':
    return losses.masked_mean(jnp.square(z_sc.astype(jnp.float32) - zt), mask)
  if kind == 'ce':
    if labels is None:
      raise ValueError("softmax_regression(kind='ce') needs labels.")
    return losses.masked_mean(
        optax.softmax_cross_entropy_with_integer_labels(z_sc.astype(jnp.float32), labels), mask)
  if kind == 'kl':
    return losses.masked_mean(kd_lib.kd_per_sample(z_sc, zt, temperature=temperature), mask)
  raise ValueError(f'unknown SRRL L_SR kind {kind!r}; known: {SR_KINDS}.')


def adain(x: Array, y: Array, eps: float = 1e-5) -> Array:
  """AdaIN (Huang & Belongie 2017): sigma(y) (x - mu(x)) / sigma(x) + mu(y).

  Per sample and channel over H, W of NHWC maps; sigma = sqrt(biased variance + eps)
  (the same eps under both square roots). x and y must agree in N and C; their H, W may
  differ. Gradients flow into x and y (stop y yourself if it is a frozen target).
  """
  chex.assert_rank([x, y], 4)
  if x.shape[0] != y.shape[0] or x.shape[-1] != y.shape[-1]:
    raise ValueError(f'adain: x {x.shape} and y {y.shape} must agree in batch and channels.')
  x = x.astype(jnp.float32)
  y = y.astype(jnp.float32)
  mu_x = jnp.mean(x, axis=(1, 2), keepdims=True)
  mu_y = jnp.mean(y, axis=(1, 2), keepdims=True)
  sd_x = jnp.sqrt(jnp.var(x, axis=(1, 2), keepdims=True) + eps)
  sd_y = jnp.sqrt(jnp.var(y, axis=(1, 2), keepdims=True) + eps)
  return sd_y * (x - mu_x) / sd_x + mu_y


class SRRLConnector(nn.Module):
  """SRRL `transfer_conv`: 1x1 conv C_s -> C_t without bias, init N(0, sqrt(2 / C_t)), BN, ReLU."""
  features: int

  @nn.compact
  def __call__(self, x, *, train: bool):
    std = math.sqrt(2.0 / self.features)  # n = k * k * out_channels with k = 1
    x = nn.Conv(self.features, (1, 1), use_bias=False,
                kernel_init=initializers.normal(stddev=std), name='conv')(x)
    x = common.batch_norm(train, 'bn', scale_init=nn.initializers.ones,
                          bias_init=nn.initializers.zeros)(x)
    return nn.relu(x)


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
  if sr_loss not in SR_KINDS:
    raise ValueError(f'srrl: sr_loss must be one of {SR_KINDS}, got {sr_loss!r}.')
  for k, v in dict(alpha=alpha, beta=beta).items():
    if not (isinstance(v, (int, float)) and v >= 0):
      raise ValueError(f'srrl: {k} must be >= 0, got {v!r}.')
  layers = _parse_layers(layers)
  c_t = int(t_shape[-1])
  specs = {}  # layer -> (student key, teacher key, stage index or None, connector)
  teacher_model = None
  for layer in layers:
    if layer == 'last':
      specs[layer] = (student_feature, teacher_feature, None, SRRLConnector(c_t))
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
    specs[layer] = (layer, layer, k, SRRLConnector(int(t_map[-1])))
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
    h, stats = modules.apply_variables(conn, variables, ctx.student[s_key], train=ctx.train)
    v_s = jnp.mean(h, axis=(1, 2))
    t_feat = jax.lax.stop_gradient(ctx.teacher[t_key])
    if k is None:
      head = ctx.teacher_variables['params'][teacher_head]
      if head['kernel'].shape != (c_t, t_logits[-1]):
        raise ValueError(f'srrl: teacher head {teacher_head!r} has kernel {head["kernel"].shape}, '
                         f'expected {(c_t, t_logits[-1])}.')
      l_fm = feature_matching(v_s, t_feat, ctx.mask)
      z_sc = apply_teacher_head(v_s, head['kernel'], head.get('bias'))
    else:
      l_fm = feature_matching(v_s, jnp.mean(t_feat, axis=(1, 2)), ctx.mask)
      tvars = jax.lax.stop_gradient({'params': ctx.teacher_variables['params'],
                                     'batch_stats': ctx.teacher_variables['batch_stats']})
      z_sc = teacher_model.apply(tvars, adain(h, t_feat), k, train=False,
                                 method='forward_from')
    l_sr = softmax_regression(z_sc, ctx.teacher['logits'], ctx.labels, kind=sr_loss,
                              temperature=temperature, mask=ctx.mask)
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

  # masked: every mean over N reads ctx.mask; the connector's BN is masked by the step.
  return Term(name='srrl', method='srrl', weight=float(weight), loss=loss, init=init,
              needs=Needs(teacher_variables=True), masked=True)


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
  """The teacher's module (for `forward_from`), rebuilt from the teacher spec's arch."""
  if info.teacher_spec is None:
    raise ValueError('srrl: layers other than "last" need BuildInfo.teacher_spec to rebuild the '
                     'teacher for its forward_from (L_SR through the rest of the teacher).')
  if not info.teacher_spec.has_forward_from:
    raise ValueError(f'srrl: teacher {info.teacher_arch!r} has no forward_from(h, stage); '
                     f'L_SR at earlier layers supports the WRN and ResNet families.')
  return models.create(info.teacher_arch, info.num_classes)
