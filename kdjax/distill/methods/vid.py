"""Variational information distillation (Ahn et al. 2019; RD `VIDLoss`).

Synopsis:
  dict(method='vid', weight=1.0)      stage outputs (RD feat[1:-1])

Per layer: mu = 1x1 regressor (C_s -> C_t -> C_t -> C_t, ReLU between, no bias,
no BN) on the student map, per-channel sigma^2 = softplus(theta) + 1e-5 with
sigma^2 = 5 at init; L = mean 0.5[(mu - t)^2 / sigma^2 + log sigma^2], summed
over layers. The larger map is pooled to the smaller first (the student before
the regressor, as RD).
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax import losses
from kdjax.distill import checks
from kdjax.distill import modules
from kdjax.distill.api import BuildInfo, Context, Term, register_method, resolve_feature_pair

Array = jax.Array


def vid_nll(mean: Array, var: Array, target: Array) -> Array:
  """RD `VIDLoss`: mean over N*C*H*W of 0.5 [(mu - t)^2 / sigma^2 + log sigma^2]."""
  chex.assert_equal_shape([mean, target])
  var = losses.f32(var)
  sq = jnp.square(losses.f32(mean) - jax.lax.stop_gradient(losses.f32(target)))
  return jnp.mean(0.5 * (sq / var + jnp.log(var)))


def vid_nll_per_sample(mean: Array, var: Array, target: Array) -> Array:
  """`vid_nll` per sample [N] (mean over C*H*W); its batch mean is `vid_nll`."""
  chex.assert_equal_shape([mean, target])
  var = losses.f32(var)
  sq = jnp.square(losses.f32(mean) - jax.lax.stop_gradient(losses.f32(target)))
  return losses.row_mean(0.5 * (sq / var + jnp.log(var)))


def softplus_inverse(y: float) -> float:
  return float(np.log(np.expm1(y)))


class VIDRegressor(nn.Module):
  """Variational information distillation head (Ahn et al. 2019; RD `VIDLoss`).

  mu = 1x1 convs C_s->mid, ReLU, mid->mid, ReLU, mid->C_t (no bias, no BN);
  per-channel variance sigma^2 = softplus(log_scale) + eps with log_scale
  initialised so that sigma^2 = init_var (RD: softplus^-1(init_var - eps)).
  Returns (mu, sigma^2 [C_t]).
  """
  mid_channels: int
  out_channels: int
  init_var: float = 5.0
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = x.shape[-1]
    x = nn.relu(modules.conv(self.mid_channels, 1, c, bias=False, name='conv0')(x))
    x = nn.relu(modules.conv(self.mid_channels, 1, self.mid_channels, bias=False, name='conv1')(x))
    mu = modules.conv(self.out_channels, 1, self.mid_channels, bias=False, name='conv2')(x)
    init = softplus_inverse(self.init_var - self.eps)
    log_scale = self.param('log_scale', nn.initializers.constant(init), (self.out_channels,))
    return mu, nn.softplus(log_scale) + self.eps


@register_method('vid', family='features', paper='Ahn et al. 2019, Variational Information '
                 'Distillation for Knowledge Transfer')
def build_vid(info: BuildInfo, *, weight: float = 1.0, init_var: float = 5.0, eps: float = 1e-5,
              student_features=None, teacher_features=None) -> Term:
  """VID: Gaussian NLL of the teacher maps under 1x1-conv regressors of the student maps."""
  s_keys, t_keys = resolve_feature_pair(info, 'vid', student_features, teacher_features,
                                   lambda: info.stages('student'), lambda: info.stages('teacher'))
  checks.require_maps(info, 'vid', s_keys, t_keys)
  checks.positive('vid', eps=eps)
  if not init_var > eps:
    raise ValueError(f'vid: init_var must exceed eps={eps}, got {init_var!r}.')
  regs = []
  for ks, kt in zip(s_keys, t_keys):
    s, t = checks.shape(info, 'student', ks), checks.shape(info, 'teacher', kt)
    checks.require_poolable('vid', ks, kt, s, t)
    regs.append(VIDRegressor(t[-1], t[-1], init_var=init_var, eps=eps))

  def _match(x, y):
    hx, hy = x.shape[1:3], y.shape[1:3]
    if hx[0] > hy[0] or hx[1] > hy[1]:
      return losses.adaptive_avg_pool_to(x, tuple(hy)), y
    if hx != hy:
      return x, losses.adaptive_avg_pool_to(y, tuple(hx))
    return x, y

  def init(rng, ctx: Context):
    mods = {}
    for i, (ks, kt) in enumerate(zip(s_keys, t_keys)):
      x, _ = _match(ctx.student[ks], ctx.teacher[kt])
      mods[f'layer{i}'] = (regs[i], x)
    return modules.init_modules(rng, mods)

  def run(aux, ctx: Context, nll):
    total, metrics = 0.0, {}
    for i, (ks, kt) in enumerate(zip(s_keys, t_keys)):
      x, y = _match(ctx.student[ks], ctx.teacher[kt])
      mu, var = modules.apply_module(regs[i], aux, f'layer{i}', x, ctx.train, {})
      total = total + nll(mu, var, y)
      metrics[f'var{i}'] = var.mean()
    return total, metrics, {}

  def loss(aux, ctx: Context):
    return run(aux, ctx, vid_nll)

  def per_sample(aux, ctx: Context):  # each sample's NLL (mean over H, W, C)
    return run(aux, ctx, vid_nll_per_sample)
  return Term(name='vid', method='vid', weight=float(weight), loss=loss, init=init,
              per_sample=per_sample)
