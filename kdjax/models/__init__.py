"""The kdjax model zoo: CIFAR and ImageNet architectures returning `(logits, features)`.

Synopsis:
  model = models.create('resnet8x4', num_classes=100)
  variables = model.init(rng, images, train=False)
  logits, feats = model.apply(variables, images, train=False)
  logits, feats = model.apply(variables, images, train=True, mutable=['batch_stats'])[0]
  models.names(); models.param_count(variables); models.survival_probs(L, 0.5)

Interface shared by every model (images NHWC float32):
  * `__call__(x, *, train=False, branch_scale=None) -> (logits, features)`.
  * `features` is a flat dict with `stem`, `stage1..N`, `stage1..N_preact`,
    `last_map`, `pooled`, `logits` (N = 3 for CIFAR resnet/wrn/shufflenets, 4 for
    vgg, mobilenetv2, resnet*_cifar, the ImageNet resnets and mobilenetv1). Each
    family module documents exactly which tensor each name is.
  * The classifier is an `nn.Dense` named `head` applied to `pooled`
    (`params['head']['kernel' | 'bias']`).
  * `model.bn_before_relu()` maps each `stageK_preact` to the param path of the BN
    whose affine output precedes that ReLU (OFD's `get_bn_before_relu`).
  * Residual families (resnet*, resnet*_cifar, wrn_*) have `num_blocks` and accept
    `branch_scale` [num_blocks]: each residual branch is multiplied by its scale
    before the add (stochastic depth: a Bernoulli mask or the survival
    probabilities). Other families have no `num_blocks` and raise on `branch_scale`.
  * Global pooling is a mean over H, W, so every net also runs on small inputs.

Names: resnet{6n+2} (resnet8 ... resnet110, any such depth), resnet8x4,
resnet32x4 (any resnet{6n+2}x4), wrn_{depth}_{width} ((depth - 4) % 6 == 0),
vgg8/11/13/16/19, mobilenetv2 (RD mobile_half; `width_mult` override),
shufflenetv1, shufflenetv2, resnet18/34/50_cifar (RD resnetv2), the ImageNet
resnet18, resnet34, resnet50 (torchvision) and mobilenetv1 (mdistiller), and
one_<base> (ONE's 3-branch network on a CIFAR resnet{6n+2} or wrn_d_w, models/one.py;
`branches` and `block` overrides).
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np

from kdjax.models import (mobilenetv1, mobilenetv2, one, resnet_cifar, resnet_imagenet, shufflenet,
                          vgg, wrn)

_CIFAR_RESNET_DEPTHS = (8, 14, 20, 26, 32, 44, 56, 110)
# WRN variants that RD/CRD and the seed papers use; any valid wrn_d_w is accepted.
_WRN_LISTED = ('wrn_16_1', 'wrn_16_2', 'wrn_40_1', 'wrn_40_2', 'wrn_10_2', 'wrn_28_2', 'wrn_16_4',
               'wrn_28_4', 'wrn_40_4', 'wrn_46_4', 'wrn_10_10', 'wrn_16_10', 'wrn_28_10')


def _fixed() -> dict[str, Callable[..., nn.Module]]:
  reg: dict[str, Callable[..., nn.Module]] = {}
  for d in _CIFAR_RESNET_DEPTHS:
    reg[f'resnet{d}'] = lambda k, d=d, **kw: resnet_cifar.cifar_resnet(d, k, **kw)
  for d in (8, 32):
    reg[f'resnet{d}x4'] = lambda k, d=d, **kw: resnet_cifar.cifar_resnet(d, k, wide=True, **kw)
  for name in _WRN_LISTED:
    _, d, w = name.split('_')
    reg[name] = lambda k, d=int(d), w=int(w), **kw: wrn.WideResNet(d, w, k, **kw)
  for name, cfg in vgg.CONFIGS.items():
    reg[name] = lambda k, cfg=cfg, name=name, **kw: vgg.VGG(cfg, k, arch=name, **kw)
  reg['mobilenetv2'] = lambda k, **kw: mobilenetv2.MobileNetV2(k, **kw)
  reg['shufflenetv1'] = lambda k, **kw: shufflenet.ShuffleNetV1(k, **kw)
  reg['shufflenetv2'] = lambda k, **kw: shufflenet.ShuffleNetV2(k, **kw)
  for d in (18, 34, 50):
    reg[f'resnet{d}_cifar'] = lambda k, d=d, **kw: resnet_cifar.resnet_cifar(d, k, **kw)
  for d in (18, 34, 50):  # ImageNet names shadow the generic CIFAR resnet{6n+2} (50 = 6*8+2)
    reg[f'resnet{d}'] = lambda k, d=d, **kw: resnet_imagenet.resnet_imagenet(d, k, **kw)
  reg['mobilenetv1'] = lambda k, **kw: mobilenetv1.MobileNetV1(k, **kw)
  # Self-Guidance's CIFAR "ResNet-50": 6n+2 basic blocks with n = 8 (0.76M), which
  # the ImageNet `resnet50` shadows.
  reg['resnet50_basic'] = lambda k, **kw: resnet_cifar.cifar_resnet(50, k, **kw)
  return reg


_REGISTRY = _fixed()
_WRN_RE = re.compile(r'wrn_(\d+)_(\d+)')
_RESNET_RE = re.compile(r'resnet(\d+)(x4)?')


def names() -> list[str]:
  """The listed architecture names (wrn_d_w and resnet{6n+2}[x4] also accept other depths)."""
  return list(_REGISTRY)


def _unknown(name: str) -> ValueError:
  close = difflib.get_close_matches(name, names(), n=3)
  hint = f' Did you mean {" or ".join(map(repr, close))}?' if close else ''
  return ValueError(f'Unknown model {name!r}.{hint} Known: {", ".join(names())}; also '
                    'wrn_{depth}_{width} with (depth - 4) % 6 == 0 and resnet{6n+2}[x4].')


def _factory(name: str) -> Callable[..., nn.Module]:
  if name in _REGISTRY:
    return _REGISTRY[name]
  m = _WRN_RE.fullmatch(name)
  if m:
    d, w = int(m.group(1)), int(m.group(2))
    if d < 10 or (d - 4) % 6:
      raise ValueError(f'{name}: WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, 40, ...), '
                       f'got depth {d} ((depth - 4) % 6 = {(d - 4) % 6}).')
    if w < 1:
      raise ValueError(f'{name}: WRN width must be >= 1.')
    return lambda k, **kw: wrn.WideResNet(d, w, k, **kw)
  if name.startswith('one_'):  # ONE's multi-branch net on a CIFAR resnet / wrn (models/one.py)
    base = name[len('one_'):]
    one.create_one(base, 1)    # rejects an unsupported base here, with its own message
    return lambda k, **kw: one.create_one(base, k, **kw)
  m = _RESNET_RE.fullmatch(name)
  if m and int(m.group(1)) >= 8 and (int(m.group(1)) - 2) % 6 == 0:
    d, wide = int(m.group(1)), bool(m.group(2))
    return lambda k, **kw: resnet_cifar.cifar_resnet(d, k, wide=wide, **kw)
  raise _unknown(name)


def create(name: str, num_classes: int, **overrides: Any) -> nn.Module:
  """Builds an architecture by name.

  Args:
    name: one of `names()`, or wrn_{d}_{w} / resnet{6n+2}[x4] with another depth.
    num_classes: classifier outputs.
    **overrides: extra module fields (e.g. `width_mult=1.0` for mobilenetv2).

  Returns:
    An unbound flax module; `init(rng, x, train=False)`, `apply(v, x, train=...)`.

  Raises:
    ValueError: unknown name, invalid WRN depth, or an override the family lacks.
  """
  factory = _factory(name)
  try:
    return factory(num_classes, **overrides)
  except TypeError as e:
    raise ValueError(f'{name}: bad overrides {sorted(overrides)}: {e}') from e


def param_count(variables_or_params: Any) -> int:
  """Number of trainable parameters (the `params` collection; batch_stats excluded).

  Accepts a variables dict (with 'params') or a params tree, of arrays or of
  `jax.ShapeDtypeStruct`s (e.g. from `jax.eval_shape`).
  """
  tree = variables_or_params
  if hasattr(tree, 'keys') and 'params' in tree:
    tree = tree['params']
  return int(sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree)))


def survival_probs(num_blocks: int, final_prob: float = 0.5) -> np.ndarray:
  """Linearly decaying survival probabilities p_l = 1 - (l / L)(1 - p_L), l = 1..L.

  Args:
    num_blocks: L, the number of residual blocks (`model.num_blocks`).
    final_prob: p_L, the survival probability of the last block.

  Returns:
    float32 array [L]; pass a Bernoulli sample of it (or it, for the expected
    network) as `branch_scale`.
  """
  if num_blocks < 1:
    raise ValueError(f'num_blocks must be >= 1, got {num_blocks}.')
  if not 0.0 <= final_prob <= 1.0:
    raise ValueError(f'final_prob must be in [0, 1], got {final_prob}.')
  l = np.arange(1, num_blocks + 1, dtype=np.float64)
  return (1.0 - (l / num_blocks) * (1.0 - final_prob)).astype(np.float32)


__all__ = ['create', 'names', 'param_count', 'survival_probs']
