"""Trainable auxiliary modules of the seed methods (IE-KD, SRRL, IPWD).

Synopsis:
  Coder(features)                   IE-KD 3-conv coder (official `Coder`)
  FactorAutoEncoder(channels, factor_channels)
                                    IE-KD factor auto-encoder: encoder + decoder Coders
  SRRLConnector(features)           SRRL `transfer_conv`: 1x1 conv (no bias) + BN + ReLU
  ExtraHead(num_classes)            IPWD's CE-trained linear head

All modules are flax linen, NHWC, and take `train` for their BatchNorm
(PyTorch momentum 0.1 / eps 1e-5, as the model zoo). Their variables live in
`state['params']['aux'][term]` and `state['aux_state'][term]['batch_stats']`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax.models import common


def _leaky(x):
  return nn.leaky_relu(x, negative_slope=0.1)


class Coder(nn.Module):
  """Three 3x3 stride-1 convs (no bias), each + BN + LeakyReLU(0.1), with a LeakyReLU first.

  Channels: C_in -> C_in -> features -> features (official IE-KD `Coder(cin,
  cout)`: `relu(), conv(cin, cin), bn, relu, conv(cin, cout), bn, relu,
  conv(cout, cout), bn, relu` with LeakyReLU 0.1 and N(0, sqrt(2 / (9 C_out)))
  conv init). The seed's Table 3 "deconvs" are these convs: a 3x3 transposed
  conv at stride 1 / padding 1 is an ordinary 3x3 conv.

  Attributes:
    features: output channels.
    leaky_input: apply the LeakyReLU to the input first (official; Table 3 has no such layer).
  """
  features: int
  leaky_input: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool):
    cin = x.shape[-1]
    if self.leaky_input:
      x = _leaky(x)
    for i, c in enumerate((cin, self.features, self.features)):
      x = common.conv(c, 3, name=f'conv{i + 1}')(x)
      x = _leaky(common.batch_norm(train, f'bn{i + 1}')(x))
    return x


class FactorAutoEncoder(nn.Module):
  """IE-KD factor auto-encoder (seed 000 Table 3, official `auto_encoder`).

  encoder: C -> C -> C/r -> C/r (the factor); decoder: C/r -> C/r -> C -> C.
  `__call__` returns (factor, reconstruction); `encode` returns the factor.
  """
  channels: int
  factor_channels: int
  leaky_input: bool = True

  def setup(self):
    self.encoder = Coder(self.factor_channels, self.leaky_input)
    self.decoder = Coder(self.channels, self.leaky_input)

  def __call__(self, x, *, train: bool):
    factor = self.encoder(x, train=train)
    return factor, self.decoder(factor, train=train)

  def encode(self, x, *, train: bool):
    return self.encoder(x, train=train)


class SRRLConnector(nn.Module):
  """SRRL `transfer_conv`: 1x1 conv C_s -> C_t without bias, init N(0, sqrt(2 / C_t)), BN, ReLU."""
  features: int

  @nn.compact
  def __call__(self, x, *, train: bool):
    std = math.sqrt(2.0 / self.features)  # n = k * k * out_channels with k = 1
    x = nn.Conv(self.features, (1, 1), use_bias=False,
                kernel_init=nn.initializers.normal(stddev=std), name='conv')(x)
    x = common.batch_norm(train, 'bn', scale_init=nn.initializers.ones,
                          bias_init=nn.initializers.zeros)(x)
    return nn.relu(x)


class ExtraHead(nn.Module):
  """IPWD's extra linear classifier (PyTorch nn.Linear init, as every model's `head`)."""
  num_classes: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_classes, kernel_init=common.dense_kernel_init,
                    bias_init=nn.initializers.zeros, name='fc')(x)


def init_module(module: nn.Module, rng: jax.Array, *args, **kwargs) -> dict:
  """`module.init` with train=False where the module takes it; returns a plain dict."""
  return dict(module.init(rng, *args, **kwargs))


def apply_bn_module(module: nn.Module, variables: dict, x: jnp.ndarray, *, train: bool,
                    method=None):
  """Apply a BN-carrying module; returns (output, new_batch_stats or the old ones)."""
  kw = {} if method is None else {'method': method}
  if train:
    out, upd = module.apply(variables, x, train=True, mutable=['batch_stats'], **kw)
    return out, upd['batch_stats']
  return module.apply(variables, x, train=False, **kw), variables.get('batch_stats', {})
