"""Shared building blocks for the model zoo.

Synopsis:
  conv(features, kernel, stride, groups, use_bias, name)  PyTorch-style padded conv
  batch_norm(train, name)                                 BN with PyTorch momentum/eps
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
  * BatchNorm: flax momentum 0.9 == PyTorch momentum 0.1; eps 1e-5. One difference
    remains: flax updates the running variance with the biased batch variance,
    PyTorch with the unbiased one (a factor n/(n-1), negligible for real batches).
  * Conv kernels: Kaiming-normal, fan_out, gain sqrt(2) (what RD does for resnet,
    wrn, vgg, mobilenetv2 and mdistiller for the ImageNet nets).
  * Global average pooling is a mean over H, W, identical to RD's fixed AvgPool
    kernels at the input sizes RD uses, and valid at any input size.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

# Kaiming normal, mode='fan_out', nonlinearity='relu' (std = sqrt(2 / (k*k*out))).
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# PyTorch nn.Linear's default weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
dense_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def conv(features: int, kernel: int, stride: int = 1, *, groups: int = 1,
         use_bias: bool = False, name: str | None = None) -> nn.Conv:
  """A square conv with PyTorch padding `kernel // 2`.

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
  p = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((p, p), (p, p)), feature_group_count=groups,
                 use_bias=use_bias, kernel_init=conv_kernel_init, name=name)


def batch_norm(train: bool, name: str | None = None, **kw) -> nn.BatchNorm:
  """BatchNorm with PyTorch's momentum (0.1, i.e. flax 0.9) and eps (1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      name=name, **kw)


def Head(num_classes: int) -> nn.Dense:  # noqa: N802  (reads like a module class)
  """The classifier every model applies to `pooled`; always named `head`."""
  return nn.Dense(num_classes, kernel_init=dense_kernel_init,
                  bias_init=nn.initializers.zeros, name='head')


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

  @nn.compact
  def __call__(self, x, scale=None, *, train: bool):
    out_ch = self.features * self.expansion
    y = conv(self.features, 3, self.stride, name='conv1')(x)
    y = nn.relu(batch_norm(train, 'bn1')(y))
    y = conv(self.features, 3, name='conv2')(y)
    y = batch_norm(train, 'bn2')(y)
    residual = x
    if self.stride != 1 or x.shape[-1] != out_ch:
      residual = conv(out_ch, 1, self.stride, name='shortcut_conv')(x)
      residual = batch_norm(train, 'shortcut_bn')(residual)
    preact = _scaled(y, scale) + residual
    return nn.relu(preact), preact


class Bottleneck(nn.Module):
  """Post-activation bottleneck, stride on the 3x3 conv (RD resnetv2, torchvision v1.5).

  Same scaling / shortcut / return conventions as `BasicBlock`; expansion 4.
  """
  features: int
  stride: int = 1
  expansion = 4

  @nn.compact
  def __call__(self, x, scale=None, *, train: bool):
    out_ch = self.features * self.expansion
    y = conv(self.features, 1, name='conv1')(x)
    y = nn.relu(batch_norm(train, 'bn1')(y))
    y = conv(self.features, 3, self.stride, name='conv2')(y)
    y = nn.relu(batch_norm(train, 'bn2')(y))
    y = conv(out_ch, 1, name='conv3')(y)
    y = batch_norm(train, 'bn3')(y)
    residual = x
    if self.stride != 1 or x.shape[-1] != out_ch:
      residual = conv(out_ch, 1, self.stride, name='shortcut_conv')(x)
      residual = batch_norm(train, 'shortcut_bn')(residual)
    preact = _scaled(y, scale) + residual
    return nn.relu(preact), preact


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

