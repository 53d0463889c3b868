"""ReviewKD (Chen et al. 2021, Distilling Knowledge via Knowledge Review).

Synopsis:
  dict(method='reviewkd', weight=5.0)      student stage outputs + pooled -> teacher
                                           pre-ReLU stage outputs + pooled (mdistiller)

Formula (official dvlab-research/ReviewKD `model/reviewkd.py`; mdistiller
`distillers/ReviewKD.py`). The student's features F_1..F_L (shallow to deep;
the pooled vector is the last, as a 1x1 map) are fused from deep to shallow by
attention-based fusion (ABF) modules:
  x_l = BN(conv1x1(F_l))                                   mid channels = min(512, C_L)
  for l < L: y = nearest_resize(r_{l+1}, size of F_l), [a, b] = sigmoid(conv1x1([x_l, y]))
             x_l = a * x_l + b * y                          (per-pixel attention)
  r_l = nearest_resize(x_l, teacher size of level l),  O_l = BN(conv3x3(r_l))
and compared with the teacher's features T_l by the hierarchical context loss
  HCL(O, T) = [mse(O, T) + sum_{j: l_j < H} 2^-j mse(pool_{l_j}(O), pool_{l_j}(T))]
              / (1 + sum_j 2^-j),    levels (4, 2, 1), adaptive average pooling,
summed over levels. The loss is scaled by the warm-up min(epoch / 20, 1) with
1-indexed epochs (here min((floor(progress) + 1) / warmup_epochs, 1)).

CIFAR-100 weights (official `script/reviewKD.sh`): 5.0 for wrn_40_2 -> wrn_16_2,
wrn_40_2 -> wrn_40_1, wrn_40_2 -> ShuffleV1, resnet32x4 -> resnet8x4,
resnet32x4 -> ShuffleV1; 8.0 for resnet32x4 -> ShuffleV2; 0.6 for resnet56 ->
resnet20; 1.0 for resnet110 -> resnet32; CE weight 1. Channel counts and
spatial sizes come from the feature shapes (in = student, out = teacher), which
reproduces the reference's per-architecture tables.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill.api import BuildInfo, Context, Term, register_method, resolve_features
from kdjax.distill import modules as ac
from kdjax.distill.methods import ipwd
from kdjax.distill.modules import torch_bias_init, torch_kernel_init
from kdjax.losses.features import adaptive_avg_pool_to
from kdjax.models import initializers
from kdjax.models.common import batch_norm

Array = jax.Array

# kaiming_uniform_(a=1): U(+-sqrt(3 / fan_in)).
kaiming_a1_init = initializers.variance_scaling(1.0, 'fan_in', 'uniform')
HCL_LEVELS = (4, 2, 1)


# ----------------------------------------------------------------------------
# Pure functions

def nearest_resize(x: Array, size: tuple[int, int]) -> Array:
  """torch F.interpolate(mode='nearest') of an NHWC map: source index floor(i * in / out)."""
  h, w = x.shape[1:3]
  ho, wo = size
  if (h, w) == (ho, wo):
    return x
  ih = (jnp.arange(ho) * h) // ho
  iw = (jnp.arange(wo) * w) // wo
  return x[:, ih][:, :, iw]


def hcl_per_sample(student_maps: Sequence[Array], teacher_maps: Sequence[Array]) -> Array:
  """Per-sample HCL [N] (means over H, W, C); its batch mean is the reference's HCL."""
  if len(student_maps) != len(teacher_maps):
    raise ValueError(f'hcl_loss: {len(student_maps)} student maps but {len(teacher_maps)} '
                     'teacher maps.')
  mse = lambda a, b: jnp.mean((a - b) ** 2, axis=(1, 2, 3))
  total = 0.0
  for fs, ft in zip(student_maps, teacher_maps):
    if fs.shape != ft.shape:
      raise ValueError(f'hcl_loss: student map {fs.shape} and teacher map {ft.shape} differ.')
    fs = fs.astype(jnp.float32)
    ft = jax.lax.stop_gradient(ft).astype(jnp.float32)
    loss = mse(fs, ft)
    cnt, tot = 1.0, 1.0
    for lvl in HCL_LEVELS:
      if lvl >= fs.shape[1]:
        continue
      cnt /= 2.0
      loss = loss + mse(adaptive_avg_pool_to(fs, (lvl, lvl)),
                        adaptive_avg_pool_to(ft, (lvl, lvl))) * cnt
      tot += cnt
    total = total + loss / tot
  return total


def hcl_loss(student_maps: Sequence[Array], teacher_maps: Sequence[Array],
             weights: Array | None = None) -> Array:
  """Hierarchical context loss summed over levels (module doc); teacher gets no gradient.

  weights: optional [N] per-sample weights (IPWD's), giving mean_n w_n HCL_n.
  """
  per_sample = hcl_per_sample(student_maps, teacher_maps)
  if weights is None:
    return jnp.mean(per_sample)
  return jnp.mean(jax.lax.stop_gradient(weights) * per_sample)


def warmup_ramp(progress: Array, warmup_epochs: float) -> Array:
  """min(epoch / warmup_epochs, 1) with the 1-indexed current epoch."""
  if warmup_epochs <= 0:
    return jnp.ones(())
  return jnp.minimum((jnp.floor(progress) + 1.0) / warmup_epochs, 1.0)


# ----------------------------------------------------------------------------
# Trainable modules

class ABF(nn.Module):
  """Attention-based fusion of one level (reference `ABF`): returns (output, residual)."""
  mid_channels: int
  out_channels: int
  fuse: bool

  @nn.compact
  def __call__(self, x, residual, out_hw, train: bool = False):
    h, w = x.shape[1:3]
    x = nn.Conv(self.mid_channels, (1, 1), use_bias=False, kernel_init=kaiming_a1_init,
                name='conv1')(x)
    x = batch_norm(train, 'bn1')(x)
    if self.fuse:
      y = nearest_resize(residual, (h, w))
      z = nn.Conv(2, (1, 1), kernel_init=torch_kernel_init,
                  bias_init=torch_bias_init(2 * self.mid_channels), name='att_conv')(
                      jnp.concatenate([x, y], axis=-1))
      z = nn.sigmoid(z)
      x = x * z[..., 0:1] + y * z[..., 1:2]
    x = nearest_resize(x, tuple(out_hw))
    out = nn.Conv(self.out_channels, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                  kernel_init=kaiming_a1_init, name='conv2')(x)
    return batch_norm(train, 'bn2')(out), x


class ReviewFusion(nn.Module):
  """The ABF chain from the deepest level to the shallowest (reference `ReviewKD.forward`).

  Attributes:
    mid_channels: width of every ABF (min(512, C of the deepest student feature)).
    out_channels: teacher channels per level, shallow to deep.
    out_hw: teacher spatial size per level, shallow to deep.
  """
  mid_channels: int
  out_channels: tuple[int, ...]
  out_hw: tuple[tuple[int, int], ...]

  @nn.compact
  def __call__(self, feats, train: bool = False):
    n = len(feats)
    outs, residual = [None] * n, None
    for i in reversed(range(n)):
      abf = ABF(self.mid_channels, self.out_channels[i], fuse=i < n - 1, name=f'abf{i}')
      outs[i], residual = abf(feats[i], residual, self.out_hw[i], train)
    return outs


def as_map(x: Array) -> Array:
  """A pooled [N, C] vector as a [N, 1, 1, C] map (the reference's unsqueeze(-1)x2)."""
  return x[:, None, None, :] if x.ndim == 2 else x


# ----------------------------------------------------------------------------
# Registration

@register_method('reviewkd', family='features', paper='Chen et al. 2021, Distilling Knowledge '
                 'via Knowledge Review')
def build_reviewkd(info: BuildInfo, *, weight: float = 1.0, warmup_epochs: float = 20.0,
                   max_mid_channels: int = 512, student_features=None,
                   teacher_features=None, ipw: bool = False, ipw_estimator: str = 'prob_ratio',
                   ipw_w_min: float = 1.0, ipw_w_max: float = 10.0,
                   ipw_cls_weight: float = 1.0) -> Term:
  """ABF fusion + HCL (mdistiller default weight 1; official CIFAR weights in the module doc).

  ipw=True: ReviewKD + IPWD (IPWD appendix Table 2): the generic
  `ipwd.with_ipw` applied to the per-sample HCL, i.e. mean_n w_n HCL_n +
  ipw_cls_weight * CE(z_cls, y), with IPWD's w from the student's logits and
  an extra linear CE head on stop_gradient(pooled).
  """
  def default_student():
    return info.stages('student') + ('pooled',)

  def default_teacher():
    return info.stages('teacher', preact=True) + ('pooled',)
  s_keys = resolve_features(info, 'student', student_features, default_student)
  t_keys = resolve_features(info, 'teacher', teacher_features, default_teacher)
  if len(s_keys) != len(t_keys):
    raise ValueError(f'reviewkd: {len(s_keys)} student features {list(s_keys)} but '
                     f'{len(t_keys)} teacher features {list(t_keys)}; list the same number.')
  if not (isinstance(max_mid_channels, int) and max_mid_channels > 0):
    raise ValueError(f'reviewkd: max_mid_channels must be a positive int, got {max_mid_channels!r}.')
  if not (isinstance(warmup_epochs, (int, float)) and warmup_epochs >= 0):
    raise ValueError(f'reviewkd: warmup_epochs must be >= 0, got {warmup_epochs!r}.')

  def map_shape(who, key):
    s = tuple(info.feature(who, key).shape)
    if len(s) == 2:
      return (s[0], 1, 1, s[1])
    if len(s) != 4:
      raise ValueError(f'reviewkd: {who} feature {key!r} must be NHWC or [N, C], got {s}.')
    return s
  s_shapes = [map_shape('student', k) for k in s_keys]
  t_shapes = [map_shape('teacher', k) for k in t_keys]
  for i in range(1, len(s_shapes)):
    if s_shapes[i][1] > s_shapes[i - 1][1]:
      raise ValueError(f'reviewkd: student features must go from shallow (large) to deep '
                       f'(small) maps; {s_keys[i - 1]!r} {s_shapes[i - 1][1:3]} precedes '
                       f'{s_keys[i]!r} {s_shapes[i][1:3]}.')
  mid = min(max_mid_channels, s_shapes[-1][-1])
  fusion = ReviewFusion(mid, tuple(t[-1] for t in t_shapes), tuple(t[1:3] for t in t_shapes))

  def init(rng, ctx: Context):
    return ac.init_modules(rng, {'fusion': (fusion, [as_map(ctx.student[k]) for k in s_keys])})

  def per_sample(aux, ctx: Context):
    stats = {}
    outs = ac.apply_module(fusion, aux, 'fusion', [as_map(ctx.student[k]) for k in s_keys],
                           ctx.train, stats)
    values = hcl_per_sample(outs, [as_map(ctx.teacher[k]) for k in t_keys])
    ramp = warmup_ramp(ctx.progress, warmup_epochs)
    hcl = jnp.mean(values) if ctx.mask is None else losses.masked_mean(values, ctx.mask)
    return ramp * values, dict(warmup=ramp, hcl=hcl), ac.state_out(aux, stats)

  def loss(aux, ctx: Context):
    values, metrics, state = per_sample(aux, ctx)
    return jnp.mean(values), metrics, state
  term = Term(name='reviewkd', method='reviewkd', weight=float(weight), loss=loss, init=init,
              per_sample=per_sample)
  if not ipw:
    return term
  return ipwd.with_ipw(term, info, estimator=ipw_estimator, w_min=ipw_w_min, w_max=ipw_w_max,
                       cls_weight=ipw_cls_weight)
