"""Overhaul of feature distillation (Heo et al. 2019, ICCV; clovaai/overhaul-distillation).

Synopsis:
  dict(method='ofd', weight=1e-3)     pre-ReLU stage maps of both networks

Student pre-ReLU maps go through a 1x1 conv + BN connector to the teacher's
width; the teacher target is clamped from below by a per-channel margin
E[x | x < 0] of N(beta, gamma^2), from the teacher's BN before that ReLU
(the teacher spec's `bn_before_relu`, read from `ctx.teacher_variables` every
step, which equals the official buffers computed once since the teacher is
frozen); partial L2 (sum), stage i weighted 1/2^(n-i-1), divided by N; the
weight 1e-3 is the official CIFAR /1000 (ImageNet: 1e-4). As the official code
(`t_net.train()`), the teacher runs with BN on batch statistics by default
(`teacher_batch_stats=True`, for every term of the stage; its running
statistics are not updated); False uses its running statistics (RD's
convention for every other method).
Maps of different spatial size (cross-architecture pairs) are matched by
pooling the larger one (kdjax extension).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Needs, Term, register_method, resolve_feature_pair
from kdjax.models import initializers
from kdjax.models.common import batch_norm

Array = jax.Array


def _phi(x):
  return jnp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _cdf(x):
  return 0.5 * (1.0 + jax.scipy.special.erf(x / math.sqrt(2.0)))


def ofd_margin(gamma: Array, beta: Array) -> Array:
  """Per-channel OFD margin from the BN before the ReLU (official `get_margin_from_BN`).

  With s = |gamma|, m = beta: if Phi(-m/s) > 0.001, margin = m - s phi(m/s) / Phi(-m/s)
  (the mean of N(m, s^2) below 0), else -3 s. A channel with s = 0 gets margin
  min(m, 0) (its pre-ReLU value is the constant m).
  """
  s = jnp.abs(losses.f32(gamma))
  m = losses.f32(beta)
  safe_s = jnp.where(s > 0, s, 1.0)
  p = _cdf(-m / safe_s)
  safe_p = jnp.where(p > 0.001, p, 1.0)
  margin = jnp.where(p > 0.001, m - safe_s * _phi(m / safe_s) / safe_p, -3.0 * s)
  return jnp.where(s > 0, margin, jnp.minimum(m, 0.0))


def ofd_partial_l2(source: Array, target: Array, margin: Array) -> Array:
  """Official `distillation_loss`: t' = max(t, margin); sum (s - t')^2 1[(s > t') or (t' > 0)].

  `margin` broadcasts against the channel axis (shape [C]). Zero when s = t'
  wherever t' > 0 and s <= t' elsewhere.
  """
  s = losses.f32(source)
  t = jnp.maximum(jax.lax.stop_gradient(losses.f32(target)), losses.f32(margin))
  mask = (s > t) | (t > 0)
  return jnp.sum(jnp.square(s - t) * mask)


def ofd_loss(sources: Sequence[Array], targets: Sequence[Array],
             margins: Sequence[Array], per_sample: bool = False) -> Array:
  """OFD distillation summed over stages with weights 1/2^(n-i-1), divided by N.

  The official CIFAR code further divides by 1000 (the term weight 1e-3 here).
  Where the connected student map and the teacher map differ in size, the
  larger is adaptive-average-pooled to the smaller (teacher after the margin
  clamp), a kdjax extension for cross-architecture pairs. `per_sample`: each
  sample's sum [N] (whose mean is the loss).
  """
  n = sources[0].shape[0]
  num = len(sources)
  total = jnp.zeros((n,) if per_sample else (), jnp.float32)
  for i, (s, t, m) in enumerate(zip(sources, targets, margins)):
    t = jnp.maximum(jax.lax.stop_gradient(losses.f32(t)), losses.f32(m))
    s, t = losses.match_spatial(losses.f32(s), t)
    if per_sample:
      part = jax.vmap(lambda a, b: ofd_partial_l2(a, b, m))(s, t)
    else:
      part = ofd_partial_l2(s, t, m)
    total += part / 2.0 ** (num - i - 1)
  return total if per_sample else total / n


class OFDConnector(nn.Module):
  """OFD student connector (Heo et al. 2019, official `build_feature_connector`).

  1x1 conv C_s->C_t without bias, init N(0, sqrt(2 / (1*1*C_t))), then BN
  (gamma 1, beta 0).
  """
  t_channels: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(self.t_channels, (1, 1), use_bias=False,
                kernel_init=initializers.normal(math.sqrt(2.0 / self.t_channels)),
                name='conv')(x)
    return batch_norm(train, 'bn')(x)


def _lookup(tree, path):
  node = tree
  for p in path:
    node = node[p]
  return node


def teacher_margins(teacher_params, bn_paths, channels):
  """Per-stage margins [C_t] from the teacher BN parameters at `bn_paths`."""
  out = []
  for path, c in zip(bn_paths, channels):
    bn = _lookup(teacher_params, path)
    gamma, beta = bn['scale'], bn['bias']
    if gamma.shape != (c,):
      raise ValueError(f'ofd: the teacher BN at {"/".join(path)} has {gamma.shape[0]} channels '
                       f'but its feature has {c}; OFD needs the BN that directly precedes the '
                       'ReLU of the whole map.')
    out.append(ofd_margin(gamma, beta))
  return out


@register_method('ofd', family='features', paper='Heo et al. 2019, A Comprehensive Overhaul of '
                 'Feature Distillation')
def build_ofd(info: BuildInfo, *, weight: float = 1e-3, student_features=None,
              teacher_features=None, teacher_batch_stats: bool = True) -> Term:
  """OFD: connector + margin-clamped partial L2 on pre-ReLU stage maps (weight 1e-3, /N)."""
  s_keys, t_keys = resolve_feature_pair(info, 'ofd', student_features, teacher_features,
                                   lambda: info.stages('student', preact=True),
                                   lambda: info.stages('teacher', preact=True))
  checks.require_maps(info, 'ofd', s_keys, t_keys)
  bn_map = info.spec('teacher').bn_before_relu
  missing = [k for k in t_keys if k not in bn_map]
  if missing:
    raise ValueError(f'ofd: teacher {info.teacher_arch} has no BN directly in front of the '
                     f'ReLU of the whole map for {missing} (its spec lists {sorted(bn_map)}; '
                     'e.g. half of a shufflenetv2 block bypasses it), so OFD margins are '
                     'undefined there.')
  paths = [tuple(bn_map[k]) for k in t_keys]
  channels = []
  conns = []
  for ks, kt in zip(s_keys, t_keys):
    s, t = checks.shape(info, 'student', ks), checks.shape(info, 'teacher', kt)
    checks.require_poolable('ofd', ks, kt, s, t)
    channels.append(t[-1])
    conns.append(OFDConnector(t[-1]))

  def init(rng, ctx: Context):
    return modules.init_modules(rng, {f'connector{i}': (m, ctx.student[k])
                                 for i, (m, k) in enumerate(zip(conns, s_keys))})

  def loss(aux, ctx: Context, per_sample: bool = False):
    if ctx.teacher_variables is None:
      raise ValueError('ofd: the Context carries no teacher_variables (needed for the margins).')
    margins = teacher_margins(ctx.teacher_variables['params'], paths, channels)
    stats, outs = {}, []
    for i, ks in enumerate(s_keys):
      outs.append(modules.apply_module(conns[i], aux, f'connector{i}', ctx.student[ks], ctx.train,
                                  stats))
    value = ofd_loss(outs, [ctx.teacher[k] for k in t_keys], margins, per_sample)
    return value, {}, modules.state_out(aux, stats)
  return Term(name='ofd', method='ofd', weight=float(weight), loss=loss, init=init,
              per_sample=lambda aux, ctx: loss(aux, ctx, per_sample=True),
              needs=Needs(teacher_variables=True, teacher_batch_stats=bool(teacher_batch_stats)))
