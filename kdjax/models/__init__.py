"""The kdjax model zoo: CIFAR and ImageNet architectures returning `(logits, features)`.

Synopsis:
  model = models.create('resnet8x4', num_classes=100)
  variables = model.init(rng, images, train=False)
  logits, feats = model.apply(variables, images, train=False)
  logits, feats = model.apply(variables, images, train=True, mutable=['batch_stats'])[0]
  models.names(); models.param_count(variables); models.survival_probs(L, 0.5)
  models.spec('resnet8')   # = create('resnet8', 10).spec(), a ModelSpec

Interface shared by every model (images NHWC float32):
  * `__call__(x, *, train=False, branch_scale=None) -> (logits, features)`.
  * `features` is a flat dict with `stem`, `stage1..N`, `stage1..N_preact`,
    `last_map`, `pooled`, `logits` (N = 3 for CIFAR resnet/wrn/shufflenets, 4 for
    vgg, mobilenetv2, resnet*_cifar, the ImageNet resnets and mobilenetv1). Each
    family module documents exactly which tensor each name is.
  * The classifier is an `nn.Dense` named `head` applied to `pooled`
    (`params['head']['kernel' | 'bias']`).
  * `model.spec()` -> `ModelSpec` (models/spec.py): everything distillation may ask
    (feature names, number of stages and of stochastic-depth blocks, the BN before
    each pre-ReLU map, whether `forward_from` exists, and `params_up_to(k)`: regexes
    of the parameters computing stage k). Code outside `kdjax.models` should use it
    rather than parameter names or architecture-name patterns.
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
shufflenetv1, shufflenetv2, resnet10/18/34/50_cifar (RD resnetv2; 10 = [1,1,1,1]),
mobilenetv1_cifar (IE-KD's CIFAR MobileNet), the ImageNet resnet18, resnet34,
resnet50 (torchvision) and mobilenetv1 (mdistiller), and one_<base> (ONE's 3-branch
network on a CIFAR resnet{6n+2} or wrn_d_w, models/one.py; `branches` and `block`
overrides), and okddip_<base> (OKDDip's peers + group leader on a CIFAR resnet{6n+2},
models/okddip.py; `branches`, `factor` and `block` overrides).

Overrides every model accepts (`create(name, k, **overrides)`): `dtype` (compute
dtype of convs / dense layers, e.g. jnp.bfloat16; parameters, BatchNorm and the
returned logits / features stay float32) and `bn_unbiased_running_var` (PyTorch's
n/(n-1) running-variance update; models/common.py `BatchNorm`).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np

from kdjax.models import (binary_resnet, mobilenetv1, mobilenetv2, okddip, one, resnet_cifar,
                          resnet_imagenet, shufflenet, vgg, wrn)
from kdjax.models.spec import ModelSpec, with_prefix

# Each family module exports FACTORIES (name -> factory(num_classes, **overrides)) and,
# for parsed names, match(name) -> factory | None. Later tables shadow earlier ones
# (the ImageNet resnet18/34/50 over the CIFAR resnet{6n+2}); adding an architecture
# is one family module added here.
_FAMILIES = (resnet_cifar, wrn, vgg, mobilenetv2, shufflenet, resnet_imagenet, mobilenetv1, one,
             binary_resnet, okddip)
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
for _fam in _FAMILIES:
  _REGISTRY.update(_fam.FACTORIES)


def names() -> list[str]:
  """The listed architecture names (wrn_d_w and resnet{6n+2}[x4] also accept other depths)."""
  return list(_REGISTRY)


def _unknown(name: str) -> ValueError:
  close = difflib.get_close_matches(name, names(), n=3)
  hint = f' Did you mean {" or ".join(map(repr, close))}?' if close else ''
  patterns = '; '.join(f.PATTERN_HELP for f in _FAMILIES if hasattr(f, 'PATTERN_HELP'))
  return ValueError(f'Unknown model {name!r}.{hint} Known: {", ".join(names())}; also '
                    f'{patterns}.')


def _factory(name: str) -> Callable[..., nn.Module]:
  if name in _REGISTRY:
    return _REGISTRY[name]
  for fam in _FAMILIES:
    factory = fam.match(name) if hasattr(fam, 'match') else None
    if factory is not None:
      return factory
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


def spec(name: str, num_classes: int = 10, **overrides: Any) -> ModelSpec:
  """`create(name, num_classes, **overrides).spec()`: what distillation may ask the model."""
  return create(name, num_classes, **overrides).spec()


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


__all__ = ['ModelSpec', 'create', 'names', 'param_count', 'spec', 'survival_probs',
           'with_prefix']
