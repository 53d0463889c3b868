"""Trainable auxiliary modules of the distillation methods (flax linen, NHWC).

Synopsis:
  ConvReg(t_channels, s_hw, t_hw, use_relu)     FitNet regressor / AB connector (RD `ConvReg`)
  Paraphraser(channels, rate, use_bn)           FT teacher auto-encoder (`encode` / `__call__`)
  Translator(out_channels, use_bn)              FT student encoder
  VIDRegressor(mid_channels, out_channels)      VID mean regressor + per-channel variance
  OFDConnector(t_channels)                      OFD 1x1 conv + BN
  Embed(dim, normalize)                         CC LinearEmbed (normalize=False) / CRD Embed

Every module takes `train` (BN on batch statistics when True); modules
without BN ignore it. Initialisations follow the references: PyTorch's
default layer init (uniform +-1/sqrt(fan_in) for weights and biases) unless
the reference overrides it (OFD's N(0, sqrt(2 / (k^2 C_out))) conv, BN
gamma=1 / beta=0). Parameter counts equal the PyTorch modules'.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from kdjax.models.common import batch_norm

# PyTorch's default Conv/Linear init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')
# PyTorch's ConvTranspose weight is [C_in, C_out, k, k], so its fan_in is C_out * k * k
# (the same fan its bias uses); flax's ConvTranspose kernel is [k, k, C_in, C_out].
torch_transpose_kernel_init = nn.initializers.variance_scaling(
    1.0 / 3.0, 'fan_in', 'uniform', in_axis=-1, out_axis=-2)


def torch_bias_init(fan_in: int):
  bound = 1.0 / math.sqrt(max(fan_in, 1))
  return lambda key, shape, dtype=jnp.float32: nn.initializers.uniform(2 * bound)(
      key, shape, dtype) - bound


def _conv(features, kernel, fan_in, *, stride=1, pad=0, bias=True, name=None):
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
      x = _conv(self.t_channels, 3, 9 * c_in, stride=2, pad=1, name='conv')(x)
    elif kind == 'transpose':
      # torch padding p corresponds to flax padding k - 1 - p on each side.
      x = nn.ConvTranspose(self.t_channels, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                           kernel_init=torch_transpose_kernel_init,
                           bias_init=torch_bias_init(16 * self.t_channels), name='conv')(x)
    else:
      kh = 1 + self.s_hw[0] - self.t_hw[0]
      kw = 1 + self.s_hw[1] - self.t_hw[1]
      x = _conv(self.t_channels, (kh, kw), kh * kw * c_in, name='conv')(x)
    x = batch_norm(train, 'bn')(x)
    return nn.relu(x) if self.use_relu else x


def _leaky(x):
  return nn.leaky_relu(x, 0.1)


class Paraphraser(nn.Module):
  """Factor Transfer paraphraser (Kim et al. 2018; RD `Paraphraser`, official FT code).

  Encoder: conv3x3 C->C, C->kC, kC->kC (bias, LeakyReLU 0.1); decoder:
  ConvTranspose3x3 kC->kC, kC->C, C->C (LeakyReLU after each, also the last).
  `use_bn` inserts BN after every conv (RD's option; off in RD and official).
  `__call__` returns (factor, reconstruction); `encode` returns the factor.
  """
  channels: int
  rate: float = 0.5
  use_bn: bool = False

  def setup(self):
    c, kc = self.channels, int(self.channels * self.rate)
    self.enc = [_conv(o, 3, 9 * i, pad=1, name=f'enc{j}')
                for j, (i, o) in enumerate(((c, c), (c, kc), (kc, kc)))]
    self.dec = [nn.ConvTranspose(o, (3, 3), padding=((1, 1), (1, 1)),
                                 kernel_init=torch_transpose_kernel_init,
                                 bias_init=torch_bias_init(9 * o), name=f'dec{j}')
                for j, (i, o) in enumerate(((kc, kc), (kc, c), (c, c)))]
    if self.use_bn:
      self.enc_bn = [nn.BatchNorm(momentum=0.9, epsilon=1e-5, name=f'enc_bn{j}') for j in range(3)]
      self.dec_bn = [nn.BatchNorm(momentum=0.9, epsilon=1e-5, name=f'dec_bn{j}') for j in range(3)]

  def _run(self, x, layers, bns, train):
    for j, layer in enumerate(layers):
      x = layer(x)
      if self.use_bn:
        x = bns[j](x, use_running_average=not train)
      x = _leaky(x)
    return x

  def encode(self, x, train: bool = False):
    return self._run(x, self.enc, getattr(self, 'enc_bn', None), train)

  def __call__(self, x, train: bool = False):
    factor = self.encode(x, train)
    return factor, self._run(factor, self.dec, getattr(self, 'dec_bn', None), train)


class Translator(nn.Module):
  """Factor Transfer translator on the student (RD `Translator`; official FT code).

  conv3x3 C_s->C_s, C_s->out, out->out (bias, LeakyReLU 0.1), out = k C_t;
  with BN after each conv when `use_bn` (RD: True; official: False).
  """
  out_channels: int
  use_bn: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = x.shape[-1]
    for j, (i, o) in enumerate(((c, c), (c, self.out_channels),
                                (self.out_channels, self.out_channels))):
      x = _conv(o, 3, 9 * i, pad=1, name=f'conv{j}')(x)
      if self.use_bn:
        x = batch_norm(train, f'bn{j}')(x)
      x = _leaky(x)
    return x


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
    x = nn.relu(_conv(self.mid_channels, 1, c, bias=False, name='conv0')(x))
    x = nn.relu(_conv(self.mid_channels, 1, self.mid_channels, bias=False, name='conv1')(x))
    mu = _conv(self.out_channels, 1, self.mid_channels, bias=False, name='conv2')(x)
    init = softplus_inverse(self.init_var - self.eps)
    log_scale = self.param('log_scale', nn.initializers.constant(init), (self.out_channels,))
    return mu, nn.softplus(log_scale) + self.eps


class OFDConnector(nn.Module):
  """OFD student connector (Heo et al. 2019, official `build_feature_connector`).

  1x1 conv C_s->C_t without bias, init N(0, sqrt(2 / (1*1*C_t))), then BN
  (gamma 1, beta 0).
  """
  t_channels: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(self.t_channels, (1, 1), use_bias=False,
                kernel_init=nn.initializers.normal(math.sqrt(2.0 / self.t_channels)),
                name='conv')(x)
    return batch_norm(train, 'bn')(x)


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
