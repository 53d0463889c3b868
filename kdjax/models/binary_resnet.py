"""Binary ResNet students (SRRL Table 8; XNOR-Net++, Bulat & Tzimiropoulos 2019).

Synopsis:
  model = binary_resnet(18, num_classes=1000)               # ImageNet stem
  model = binary_resnet(34, num_classes=100, cifar=True)    # CIFAR stem (3x3, no max-pool)
  logits, feats = model.apply(variables, images, train=False)

Binary convolution (XNOR-Net++ eq. 5, rank-1 factorised scale, its best variant):
  y = (sign(a) (*) sign(W)) . Gamma,   Gamma[h, w, o] = alpha[o] beta[h] gamma[w]
with alpha, beta, gamma learned (initialised to 1) and sign(0) = +1. Gradients:
  d sign(a) / da = 1{|a| <= 1}   (clipped straight-through estimator)
  d sign(W) / dW = 1             (straight-through for the latent real weights)
Each 3x3 convolution is a binary "unit" with its own skip connection (the
double-skip ResNet of Liu et al. 2018 that XNOR-Net++ trains):
  unit(x) = PReLU(BinConv(sign(BN(x))) . Gamma) + shortcut(x)
  shortcut = identity, or AvgPool2x2 (stride 2) -> real conv1x1 -> BN
and a BasicBlock is two units. The stem conv and the classifier stay
real-valued, as in XNOR-Net / XNOR-Net++. Stages 64/128/256/512, blocks
(2, 2, 2, 2) for ResNet-18 and (3, 4, 6, 3) for ResNet-34.

Features: `stem`, `stage1..4` (block outputs), `stage1..4_preact` (the same
maps: a binary stage ends in a sum, no ReLU), `last_map` (ReLU(BN(stage4)),
what is pooled), `pooled`, `logits`. Registered as binary_resnet18 and
binary_resnet34 (ImageNet stem) and binary_resnet18_cifar /
binary_resnet34_cifar (3x3 stem). The scales beta/gamma have one entry per
output row/column, so parameter shapes depend on the input size.
Not from an official release (the papers give no code): the block order
(BN -> sign -> conv -> scale -> PReLU), the shortcut and the initialisations
are this file's reading of the XNOR-Net++ text; see the tests for the exact
binary arithmetic.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax.models import common
from kdjax.models.spec import ModelSpec, names_regex, standard_features


# ----------------------------------------------------------------------------
# Straight-through binarisation

@jax.custom_vjp
def sign_ste(x):
  """sign(x) in {-1, +1} (0 -> +1) with the clipped straight-through gradient 1{|x| <= 1}."""
  return jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype)


def _sign_fwd(x):
  return sign_ste(x), x


def _sign_bwd(x, g):
  return (g * (jnp.abs(x) <= 1.0).astype(g.dtype),)


sign_ste.defvjp(_sign_fwd, _sign_bwd)


@jax.custom_vjp
def sign_identity(w):
  """sign(w) in {-1, +1} with the identity straight-through gradient (latent weights)."""
  return jnp.where(w >= 0, 1.0, -1.0).astype(w.dtype)


sign_identity.defvjp(lambda w: (sign_identity(w), None), lambda _, g: (g,))


class BinaryConv(nn.Module):
  """3x3 (or k x k) convolution of sign(input) with sign(W), times alpha x beta x gamma."""
  features: int
  kernel: int = 3
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    c_in = x.shape[-1]
    w = self.param('kernel', common.conv_kernel_init,
                   (self.kernel, self.kernel, c_in, self.features))
    pad = self.kernel // 2
    y = jax.lax.conv_general_dilated(
        x, sign_identity(w).astype(x.dtype), (self.stride, self.stride),
        ((pad, pad), (pad, pad)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    _, h, wd, o = y.shape
    alpha = self.param('alpha', nn.initializers.ones, (o,))
    beta = self.param('beta', nn.initializers.ones, (h,))
    gamma = self.param('gamma', nn.initializers.ones, (wd,))
    return y * (beta[:, None, None] * gamma[None, :, None] * alpha[None, None, :])


class PReLU(nn.Module):
  """torch nn.PReLU(channels): per-channel slope initialised to 0.25."""

  @nn.compact
  def __call__(self, x):
    a = self.param('slope', nn.initializers.constant(0.25), (x.shape[-1],))
    return jnp.where(x >= 0, x, a * x)


class BinaryUnit(nn.Module):
  """PReLU(BinConv(sign(BN(x)))) + shortcut(x)."""
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x, *, train: bool):
    h = sign_ste(common.batch_norm(train, 'bn')(x))
    h = PReLU(name='prelu')(BinaryConv(self.features, 3, self.stride, name='conv')(h))
    if self.stride != 1 or x.shape[-1] != self.features:
      s = x
      if self.stride != 1:
        s = nn.avg_pool(s, (self.stride, self.stride), (self.stride, self.stride))
      s = common.conv(self.features, 1, name='down_conv')(s)
      x = common.batch_norm(train, 'down_bn')(s)
    return h + x


class BinaryResNet(nn.Module):
  """Real stem and head, binary BasicBlocks of two BinaryUnits."""
  sizes: tuple[int, ...]
  num_classes: int
  cifar: bool = False
  arch: str = 'binary_resnet'

  def bn_before_relu(self) -> dict:
    """None: a binary stage ends in a sum with no BN -> ReLU (OFD margins need a teacher's)."""
    return {}

  def spec(self) -> ModelSpec:
    s = len(self.sizes)
    return ModelSpec(
        arch=self.arch, feature_names=standard_features(s), num_stages=s, num_blocks=0,
        bn_before_relu=self.bn_before_relu(), has_forward_from=False,
        stage_params=((names_regex(['conv1', 'bn1']),),)
        + tuple((rf'^layer{k}_\d+_unit\d/',) for k in range(1, s + 1)))

  @nn.compact
  def __call__(self, x, *, train: bool = False, branch_scale: Any = None):
    common.no_branch_scale(branch_scale, self.arch)
    feats = {}
    if self.cifar:
      x = common.conv(64, 3, name='conv1')(x)
      x = feats['stem'] = nn.relu(common.batch_norm(train, 'bn1')(x))
    else:
      x = common.conv(64, 7, 2, name='conv1')(x)
      x = feats['stem'] = nn.relu(common.batch_norm(train, 'bn1')(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for k, (planes, n) in enumerate(zip((64, 128, 256, 512), self.sizes), 1):
      for i in range(n):
        stride = 2 if (k > 1 and i == 0) else 1
        x = BinaryUnit(planes, stride, name=f'layer{k}_{i}_unit1')(x, train=train)
        x = BinaryUnit(planes, 1, name=f'layer{k}_{i}_unit2')(x, train=train)
      feats[f'stage{k}'] = feats[f'stage{k}_preact'] = x
    # A final BN + ReLU before pooling keeps the real-valued head on a normalised input.
    x = feats['last_map'] = nn.relu(common.batch_norm(train, 'bn_final')(x))
    feats['pooled'] = common.global_pool(x)
    logits = feats['logits'] = common.Head(self.num_classes)(feats['pooled'])
    return logits, feats


_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def binary_resnet(depth: int, num_classes: int, cifar: bool = False) -> BinaryResNet:
  """Binary ResNet-18/34 (XNOR-Net++ style); cifar=True uses a 3x3 stem without max-pool."""
  if depth not in _SIZES:
    raise ValueError(f'binary_resnet: depth must be one of {sorted(_SIZES)}, got {depth}.')
  return BinaryResNet(_SIZES[depth], num_classes, cifar=cifar,
                      arch=f'binary_resnet{depth}' + ('_cifar' if cifar else ''))


# Name -> factory(num_classes, **overrides), the models registry's family table.
FACTORIES = {f'binary_resnet{d}{suffix}': (lambda k, d=d, c=bool(suffix), **kw:
                                            binary_resnet(d, k, cifar=c, **kw))
             for d in _SIZES for suffix in ('', '_cifar')}


__all__ = ['BinaryConv', 'BinaryResNet', 'binary_resnet', 'sign_ste', 'sign_identity']
