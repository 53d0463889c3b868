"""Shared layers of the auxiliary modules, and the one helper API that runs them.

Synopsis:
  Layers used by several methods (flax linen, NHWC):
    ConvReg(t_channels, s_hw, t_hw, use_relu)   FitNet regressor / AB connector (RD `ConvReg`)
    Embed(dim, normalize)                       CC LinearEmbed (normalize=False) / CRD Embed
    conv(features, kernel, fan_in, ...)         a conv with PyTorch's default init
  Helper API (a term's auxiliary variables are {'params': {sub: ...},
  'batch_stats': {sub: ...}} with one entry per named sub-module):
    aux = init_modules(rng, {'conn0': (module, example_x)})
    y = apply_module(module, aux, 'conn0', x, ctx.train, new_stats)   BN stats into new_stats
    return loss, metrics, state_out(aux, new_stats)
    y, stats = apply_variables(module, variables, x, train=...)       one module's own variables

Method-specific modules live in their method's file under `kdjax.distill.methods`.
Every module takes `train` (BN on batch statistics when True); modules without
BN ignore it. Initialisations follow the references: PyTorch's default layer
init (uniform +-1/sqrt(fan_in) for weights and biases) unless the reference
overrides it. Parameter counts equal the PyTorch modules'.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax.models import initializers
from kdjax.models.common import batch_norm


# PyTorch's default Conv/Linear init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_kernel_init = initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')
# PyTorch's ConvTranspose weight is [C_in, C_out, k, k], so its fan_in is C_out * k * k
# (the same fan its bias uses); flax's ConvTranspose kernel is [k, k, C_in, C_out].
torch_transpose_kernel_init = initializers.variance_scaling(
    1.0 / 3.0, 'fan_in', 'uniform', in_axis=-1, out_axis=-2)


def torch_bias_init(fan_in: int):
  bound = 1.0 / math.sqrt(max(fan_in, 1))
  return lambda key, shape, dtype=jnp.float32: initializers.uniform(2 * bound)(
      key, shape, dtype) - bound


def conv(features, kernel, fan_in, *, stride=1, pad=0, bias=True, name=None):
  return nn.Conv(features, (kernel, kernel) if isinstance(kernel, int) else kernel,
                 strides=(stride, stride), padding=((pad, pad), (pad, pad)), use_bias=bias,
                 kernel_init=torch_kernel_init, bias_init=torch_bias_init(fan_in), name=name)


def conv_reg_kind(s_hw, t_hw) -> str:
  """Which ConvReg layer maps a student map of spatial size `s_hw` to `t_hw` (RD rule).

  'stride2' (s_H = 2 t_H: conv 3x3/2 pad 1), 'transpose' (2 s_H = t_H: ConvTranspose
  4x4/2 pad 1) or 'valid' (s_H >= t_H: conv with kernel 1 + s - t, no padding).
  Raises ValueError otherwise (RD raises NotImplemented).
  """
  (sh, sw), (th, tw) = tuple(s_hw), tuple(t_hw)
  if sh == 2 * th:
    return 'stride2'
  if 2 * sh == th:
    return 'transpose'
  if sh >= th and sw >= tw:
    return 'valid'
  raise ValueError(f'ConvReg: cannot map a student map of {sh}x{sw} to a teacher map of '
                   f'{th}x{tw} (RD supports s = 2t, 2s = t or s >= t).')


class ConvReg(nn.Module):
  """FitNet's convolutional regressor (RD `models/util.py` ConvReg).

  Layer by spatial sizes (see `conv_reg_kind`), always with bias, then BN and,
  if `use_relu`, ReLU (AB's connector uses `use_relu=False`).
  """
  t_channels: int
  s_hw: tuple[int, int]
  t_hw: tuple[int, int]
  use_relu: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    kind = conv_reg_kind(self.s_hw, self.t_hw)
    c_in = x.shape[-1]
    if kind == 'stride2':
      x = conv(self.t_channels, 3, 9 * c_in, stride=2, pad=1, name='conv')(x)
    elif kind == 'transpose':
      # torch padding p corresponds to flax padding k - 1 - p on each side.
      x = nn.ConvTranspose(self.t_channels, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                           kernel_init=torch_transpose_kernel_init,
                           bias_init=torch_bias_init(16 * self.t_channels), name='conv')(x)
    else:
      kh = 1 + self.s_hw[0] - self.t_hw[0]
      kw = 1 + self.s_hw[1] - self.t_hw[1]
      x = conv(self.t_channels, (kh, kw), kh * kw * c_in, name='conv')(x)
    x = batch_norm(train, 'bn')(x)
    return nn.relu(x) if self.use_relu else x


class Embed(nn.Module):
  """Linear embedding of a flattened feature (RD `LinearEmbed`; with L2 norm: `Embed`).

  CC uses normalize=False, CRD normalize=True (x / ||x||, as RD's Normalize).
  """
  dim: int = 128
  normalize: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.dim, kernel_init=torch_kernel_init,
                 bias_init=torch_bias_init(x.shape[-1]), name='linear')(x)
    if self.normalize:
      x = x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))
    return x


# ----------------------------------------------------------------------------
# Helper API


def init_modules(rng, modules: Mapping[str, tuple[Any, Any]]) -> dict:
  """Initialise named sub-modules on example inputs (train=False)."""
  params, stats = {}, {}
  for i, (name, (module, x)) in enumerate(modules.items()):
    v = module.init(jax.random.fold_in(rng, i), x, train=False)
    params[name] = v['params']
    if 'batch_stats' in v:
      stats[name] = v['batch_stats']
  out = {'params': params}
  if stats:
    out['batch_stats'] = stats
  return out


def apply_module(module, aux, name: str, x, train: bool, new_stats: dict, method=None):
  """Run sub-module `name`; with BN and train=True, store its new statistics."""
  variables = {'params': aux['params'][name]}
  stats = aux.get('batch_stats', {})
  kw = {} if method is None else {'method': method}
  if name in stats:
    variables['batch_stats'] = stats[name]
    if train:
      out, mut = module.apply(variables, x, train=True, mutable=['batch_stats'], **kw)
      new_stats[name] = mut['batch_stats']
      return out
  return module.apply(variables, x, train=train, **kw)


def state_out(aux, new_stats: dict) -> dict:
  """The non-param collections to return: updated BN statistics (others unchanged)."""
  if 'batch_stats' not in aux:
    return {}
  return {'batch_stats': {**aux['batch_stats'], **new_stats}}


def apply_variables(module: nn.Module, variables: dict, x: jnp.ndarray, *, train: bool,
                    method=None):
  """Apply a BN-carrying module; returns (output, new_batch_stats or the old ones)."""
  kw = {} if method is None else {'method': method}
  if train:
    out, upd = module.apply(variables, x, train=True, mutable=['batch_stats'], **kw)
    return out, upd['batch_stats']
  return module.apply(variables, x, train=False, **kw), variables.get('batch_stats', {})
