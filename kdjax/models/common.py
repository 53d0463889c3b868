"""Shared building blocks for the model zoo.

Synopsis:
  conv(features, kernel, stride, groups, use_bias, name)  PyTorch-style padded conv
  batch_norm(train, name)                                 BN with PyTorch momentum/eps
  with batch_mask(mask): model.apply(..., train=True)      BN statistics over valid rows only
  Head(num_classes)                                       the `head` classifier
  global_pool(x)                                          mean over H, W
  branch_scales(branch_scale, num_blocks, arch)           per-block scale list
  no_branch_scale(branch_scale, arch)                     error for non-residual nets
  BasicBlock / Bottleneck                                 post-activation residual blocks

Conventions shared by every model in the zoo:
  * Images are NHWC float32; `__call__(x, *, train, ...)` returns `(logits, features)`.
  * Convolutions use explicit symmetric padding k//2 (PyTorch `padding=k//2`), so
    stride-2 convs on even inputs match PyTorch exactly (flax 'SAME' would pad
    asymmetrically).
  * BatchNorm (`BatchNorm` below): PyTorch momentum 0.1 (flax 0.9), eps 1e-5, the
    two-pass batch variance E[(x - E[x])^2] (the one-pass E[x^2] - E[x]^2 loses
    every digit when a channel's mean is ~1000x its spread; PyTorch has no such
    failure). Running variance: the biased batch variance by default (flax),
    PyTorch's unbiased n/(n-1) one with `bn_unbiased_running_var=True`.
  * Gradients: train-mode BN uses the analytic backward and, on CPU, a strided conv's
    input gradient is computed polyphase (`grads.py`); both equal autodiff of the
    formulas to float32 rounding and only make the backward pass cheaper.
  * Mixed precision (`Layers(dtype=jnp.bfloat16)`): convolutions and dense layers
    compute in `dtype` with float32 parameters; BatchNorm statistics and
    normalisation are float32, and models return logits and features in float32.
  * Conv kernels: Kaiming-normal, fan_out, gain sqrt(2) (what RD does for resnet,
    wrn, vgg, mobilenetv2 and mdistiller for the ImageNet nets).
  * Global average pooling is a mean over H, W, identical to RD's fixed AvgPool
    kernels at the input sizes RD uses, and valid at any input size.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax.models import grads, initializers

# Kaiming normal, mode='fan_out', nonlinearity='relu' (std = sqrt(2 / (k*k*out))).
conv_kernel_init = initializers.variance_scaling(2.0, 'fan_out', 'normal')
# PyTorch nn.Linear's default weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
dense_kernel_init = initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


# The validity mask of the batch rows that train-mode BatchNorm reads (a masked last partial
# batch, `data.drop_remainder=False`). A trace-time context rather than a model argument: every
# zoo family, cohort and auxiliary module builds its BN through this one class, so a mask set
# around `model.apply` reaches all of them without threading an argument through every
# architecture (the same pattern as flax's `nn.logical_axis_rules`). It is read while tracing,
# so it must be set around the `apply` call inside the traced function, never around `jit`.
_BATCH_MASK: contextvars.ContextVar = contextvars.ContextVar('kdjax_batch_mask', default=None)


@contextlib.contextmanager
def batch_mask(mask):
  """Within this block, train-mode `BatchNorm` computes its statistics over the rows where
  `mask` ([B], bool or 0/1 float) is set; None restores the plain batch statistics.

      with batch_mask(mask):
        (logits, feats), new_state = model.apply(v, x, train=True, mutable=['batch_stats'])
  """
  token = _BATCH_MASK.set(mask)
  try:
    yield
  finally:
    _BATCH_MASK.reset(token)


def current_batch_mask():
  """The mask set by the innermost `batch_mask` block, or None."""
  return _BATCH_MASK.get()


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, PyTorch-style, statistics in float32.

  Variables as flax's nn.BatchNorm: params `scale`, `bias`; batch_stats `mean`,
  `var`. Train mode normalises with the batch mean mu and the two-pass biased
  variance v = mean((x - mu)^2), and updates
      mean <- momentum * mean + (1 - momentum) * mu
      var  <- momentum * var + (1 - momentum) * v * (n / (n - 1) if unbiased_running_var)
  with n = the number of reduced elements (batch x H x W), PyTorch's rule when
  unbiased_running_var is True. Nothing is updated while initialising (as flax).
  The output is float32 whatever the input dtype.
  Inside a `batch_mask(mask)` block the train-mode statistics are taken over the
  valid rows only (n = valid rows x H x W), so a masked batch normalises and
  updates exactly as a batch of its valid rows; every row is still normalised.
  """
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  unbiased_running_var: bool = False
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    x = jnp.asarray(x, jnp.float32)
    c = x.shape[-1]
    axes = tuple(range(x.ndim - 1))
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))
    scale = self.param('scale', self.scale_init, (c,), jnp.float32)
    bias = self.param('bias', self.bias_init, (c,), jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      mask = None if self.is_initializing() else current_batch_mask()
      y = None
      if mask is None:
        # The formula below, with the analytic backward (2 reductions; grads.py).
        y, mean, var = grads.batch_norm_train(x, scale, bias, self.epsilon)
        n = int(np.prod([x.shape[a] for a in axes]))
        unbias = n / max(n - 1, 1)
      else:
        if mask.ndim != 1 or mask.shape[0] != x.shape[0]:
          raise ValueError(f'BatchNorm {self.name!r}: the batch mask has shape {mask.shape} but '
                           f'the input has {x.shape[0]} rows (shape {x.shape}); a pass on another '
                           'batch size (extra images, rotations) must set its own mask: '
                           '`with batch_mask(mask_for_those_rows): ...`.')
        w = mask.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
        n = jnp.sum(mask.astype(jnp.float32)) * float(np.prod(x.shape[1:-1]))
        mean = jnp.sum(x * w, axes) / jnp.maximum(n, 1.0)
        var = jnp.sum(jnp.square(x - mean) * w, axes) / jnp.maximum(n, 1.0)
        unbias = n / jnp.maximum(n - 1.0, 1.0)
      if not self.is_initializing():
        run_var = var * unbias if self.unbiased_running_var else var
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * run_var
      if y is not None:
        return y
    mul = jax.lax.rsqrt(var + self.epsilon) * scale
    return (x - mean) * mul + bias


class Dense(nn.Dense):
  """nn.Dense whose output is float32 (logits stay float32 under a bf16 compute dtype)."""

  def __call__(self, inputs):
    return super().__call__(inputs).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Layers:
  """The layer factory every zoo module builds with: compute dtype and BN convention.

  Attributes:
    dtype: compute dtype of convolutions and dense layers (None = float32, or
      e.g. jnp.bfloat16); parameters are always float32.
    bn_unbiased_running_var: BatchNorm running variance with PyTorch's n/(n-1).
  """
  dtype: Any = None
  bn_unbiased_running_var: bool = False

  def conv(self, features: int, kernel: int, stride: int = 1, *, groups: int = 1,
           use_bias: bool = False, name: str | None = None,
           kernel_init: Callable = conv_kernel_init) -> nn.Conv:
    """A square conv with PyTorch padding `kernel // 2` (see `conv`)."""
    p = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((p, p), (p, p)), feature_group_count=groups,
                   use_bias=use_bias, kernel_init=kernel_init, dtype=self.dtype,
                   param_dtype=jnp.float32, name=name,
                   conv_general_dilated=grads.conv_general_dilated)

  def bn(self, train: bool, name: str | None = None, **kw) -> BatchNorm:
    """BatchNorm with PyTorch's momentum and eps (see `BatchNorm`)."""
    return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     unbiased_running_var=self.bn_unbiased_running_var, name=name, **kw)

  def dense(self, features: int, name: str | None = None) -> Dense:
    """PyTorch nn.Linear's init, float32 output."""
    return Dense(features, kernel_init=dense_kernel_init, dtype=self.dtype,
                 param_dtype=jnp.float32, name=name)

  def head(self, num_classes: int, kernel_init: Callable = dense_kernel_init) -> Dense:
    """The classifier every model applies to `pooled`; always named `head`."""
    return Dense(num_classes, kernel_init=kernel_init, bias_init=nn.initializers.zeros,
                 dtype=self.dtype, param_dtype=jnp.float32, name='head')


DEFAULT = Layers()


def layers_of(module: nn.Module) -> Layers:
  """The `Layers` of a top-level zoo model, from its `dtype` / `bn_unbiased_running_var` fields."""
  return Layers(module.dtype, module.bn_unbiased_running_var)


def float32_outputs(logits, feats: dict) -> tuple[jnp.ndarray, dict]:
  """Logits and every feature as float32 (a no-op for a float32 model)."""
  return (jnp.asarray(logits, jnp.float32),
          {k: jnp.asarray(v, jnp.float32) for k, v in feats.items()})


def conv(features: int, kernel: int, stride: int = 1, *, groups: int = 1,
         use_bias: bool = False, name: str | None = None) -> nn.Conv:
  """A square float32 conv with PyTorch padding `kernel // 2`.

  Args:
    features: output channels.
    kernel: kernel size (odd).
    stride: stride in both spatial dims.
    groups: feature groups (`groups == in_channels` gives a depthwise conv).
    use_bias: whether the conv has a bias (must match the reference model).
    name: module name (the key in `params`).

  Returns:
    An `nn.Conv` module.
  """
  return DEFAULT.conv(features, kernel, stride, groups=groups, use_bias=use_bias, name=name)


def batch_norm(train: bool, name: str | None = None, **kw) -> BatchNorm:
  """BatchNorm with PyTorch's momentum (0.1, i.e. flax 0.9) and eps (1e-5), two-pass variance."""
  return DEFAULT.bn(train, name, **kw)


def Head(num_classes: int) -> nn.Dense:  # noqa: N802  (reads like a module class)
  """The classifier every model applies to `pooled`; always named `head`."""
  return DEFAULT.head(num_classes)


def global_pool(x: jnp.ndarray) -> jnp.ndarray:
  """Global average pooling over H, W of an NHWC map."""
  return jnp.mean(x, axis=(1, 2))


def branch_scales(branch_scale: Any, num_blocks: int, arch: str) -> list:
  """Per-block residual-branch scales: a list of `num_blocks` scalars or Nones.

  Args:
    branch_scale: None, or a float array of shape [num_blocks] (a Bernoulli keep
      mask for a sampled sub-network, or the survival probabilities for the
      expected network). It may be traced: one compile serves every mask.
    num_blocks: the model's number of residual blocks.
    arch: model name for error messages.

  Returns:
    A list of length `num_blocks`: entries are None (no scaling) or 0-d arrays.
  """
  if branch_scale is None:
    return [None] * num_blocks
  branch_scale = jnp.asarray(branch_scale, jnp.float32)
  if branch_scale.shape != (num_blocks,):
    raise ValueError(f'{arch}: branch_scale must have shape ({num_blocks},) (one scale per '
                     f'residual block), got {branch_scale.shape}.')
  return [branch_scale[i] for i in range(num_blocks)]


def no_branch_scale(branch_scale: Any, arch: str) -> None:
  """Raises if a model without stochastic-depth support is given `branch_scale`."""
  if branch_scale is not None:
    raise ValueError(f'{arch} has no residual blocks usable for stochastic depth; '
                     'branch_scale is only supported by resnet*, resnet*_cifar and wrn_* models.')


def _scaled(y: jnp.ndarray, scale: Any) -> jnp.ndarray:
  return y if scale is None else y * scale


class BasicBlock(nn.Module):
  """Post-activation basic block (RD resnet.py / resnetv2.py, torchvision).

  out = relu(scale * bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); the
  shortcut is 1x1 conv + BN (option B) when stride != 1 or channels change.
  With scale 0 the block reduces to relu(shortcut(x)): x itself (already
  non-negative) for identity shortcuts, the projection for the others.
  Returns (out, preact) where preact is the pre-ReLU sum.
  """
  features: int
  stride: int = 1
  expansion = 1

  layers: Layers = DEFAULT

  @nn.compact
  def __call__(self, x, scale=None, *, train: bool):
    out_ch = self.features * self.expansion
    L = self.layers
    y = L.conv(self.features, 3, self.stride, name='conv1')(x)
    y = nn.relu(L.bn(train, 'bn1')(y))
    y = L.conv(self.features, 3, name='conv2')(y)
    y = L.bn(train, 'bn2')(y)
    residual = x
    if self.stride != 1 or x.shape[-1] != out_ch:
      residual = L.conv(out_ch, 1, self.stride, name='shortcut_conv')(x)
      residual = L.bn(train, 'shortcut_bn')(residual)
    preact = _scaled(y, scale) + residual
    return nn.relu(preact), preact


class Bottleneck(nn.Module):
  """Post-activation bottleneck, stride on the 3x3 conv (RD resnetv2, torchvision v1.5).

  Same scaling / shortcut / return conventions as `BasicBlock`; expansion 4.
  """
  features: int
  stride: int = 1
  expansion = 4

  layers: Layers = DEFAULT

  @nn.compact
  def __call__(self, x, scale=None, *, train: bool):
    out_ch = self.features * self.expansion
    L = self.layers
    y = L.conv(self.features, 1, name='conv1')(x)
    y = nn.relu(L.bn(train, 'bn1')(y))
    y = L.conv(self.features, 3, self.stride, name='conv2')(y)
    y = nn.relu(L.bn(train, 'bn2')(y))
    y = L.conv(out_ch, 1, name='conv3')(y)
    y = L.bn(train, 'bn3')(y)
    residual = x
    if self.stride != 1 or x.shape[-1] != out_ch:
      residual = L.conv(out_ch, 1, self.stride, name='shortcut_conv')(x)
      residual = L.bn(train, 'shortcut_bn')(residual)
    preact = _scaled(y, scale) + residual
    return nn.relu(preact), preact


def prefix_matcher(prefix: str, create: Callable[..., nn.Module]):
  """`match(name)` for a family named `<prefix><base>` (ONE, OKDDip): a factory, else None.

  `create(base, 1)` runs once at match time so that an unsupported base raises
  there, with the family's own message.
  """
  def match(name: str):
    if not name.startswith(prefix):
      return None
    base = name[len(prefix):]
    create(base, 1)
    return lambda k, **kw: create(base, k, **kw)
  return match


def channel_shuffle(x: jnp.ndarray, groups: int) -> jnp.ndarray:
  """ShuffleNet channel shuffle on NHWC, same channel order as PyTorch's NCHW version."""
  if groups == 1:
    return x
  n, h, w, c = x.shape
  x = x.reshape(n, h, w, groups, c // groups)
  return jnp.swapaxes(x, 3, 4).reshape(n, h, w, c)


def last_names(prefix: str, counts: Sequence[int]) -> list[str]:
  """Names `f'{prefix}{s}_{n_s - 1}'` of the last block of each stage s = 1..S."""
  return [f'{prefix}{s + 1}_{n - 1}' for s, n in enumerate(counts)]

