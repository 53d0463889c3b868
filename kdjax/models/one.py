"""ONE's multi-branch network (Lan et al. 2018, official `ONE_ResNet`), for CIFAR ResNets and WRNs.

Synopsis:
  model = create_one('resnet32', num_classes=100, branches=3)
  logits, feats = model.apply(variables, images, train=False)   # logits = ensemble

Structure: a shared trunk (stem, stage 1, stage 2 of the base network), then
`branches` independent copies of stage 3, each with its own classifier, and a
gate GAP(stage2) -> Dense(m) -> BatchNorm -> ReLU -> softmax = g. The ensemble
logits are sum_i g_i z_i (logits are mixed, not probabilities).

Base architectures:
  resnet{6n+2}  kdjax's CIFAR ResNet (`resnet_cifar`, RD widths 16/16/32/64, basic
                blocks, option-B shortcuts). The ONE code switches to bottleneck
                blocks for depth >= 44; pass block='bottleneck' (or 'auto' for the
                code's rule) to get that; the default 'basic' keeps ONE's branch
                identical to the plain `resnet{d}` baseline.
  wrn_{d}_{w}   kdjax's WRN (pre-activation, RD): trunk = conv1 + groups 1-2,
                branch = group 3 + final BN-ReLU + head. Seed 002 runs ONE on WRNs;
                the official code has no WRN, so this split follows the ResNet one.

Blocks are `common.BasicBlock`/`common.Bottleneck` and `wrn.WideBlock`, the same
classes the plain models use.

Features: `stem`, `stage1`, `stage2` (trunk), `gate` [N, m], `branch{i}/stage3`,
`branch{i}/pooled`, `branch{i}/logits`, `ensemble/logits`, and branch 0's
`stage3`, `last_map`, `pooled` under the plain names (so single-network feature
methods still find them); the main logits are the ensemble's.
Parameter names: trunk as in the base model (`conv1`, `bn1`, `layer{1,2}_{i}` or
`block{1,2}_{i}`), `branch{i}/...` (stage-3 blocks, [`bn1`,] `head`), `gate_fc`,
`gate_bn`.
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax.models import common
from kdjax.models.spec import ModelSpec, names_regex
from kdjax.models.wrn import WideBlock

_RESNET = re.compile(r'resnet(\d+)')
_WRN = re.compile(r'wrn_(\d+)_(\d+)')


class _ResNetBranch(nn.Module):
  """Stage 3 of a CIFAR ResNet plus its classifier."""
  n: int
  planes: int
  block: str
  num_classes: int
  layers: common.Layers = common.DEFAULT

  @nn.compact
  def __call__(self, x, *, train: bool):
    block_cls = common.BasicBlock if self.block == 'basic' else common.Bottleneck
    for i in range(self.n):
      x, _ = block_cls(self.planes, 2 if i == 0 else 1, layers=self.layers,
                       name=f'layer3_{i}')(x, train=train)
    stage3 = x
    pooled = common.global_pool(x)
    return self.layers.head(self.num_classes)(pooled), stage3, stage3, pooled


class _WRNBranch(nn.Module):
  """Group 3 of a WRN plus the final BN-ReLU and classifier."""
  n: int
  features: int
  num_classes: int
  layers: common.Layers = common.DEFAULT

  @nn.compact
  def __call__(self, x, *, train: bool):
    L = self.layers
    for i in range(self.n):
      x, _ = WideBlock(self.features, 2 if i == 0 else 1, layers=L, name=f'block3_{i}')(
          x, train=train)
    stage3 = x
    last = nn.relu(L.bn(train, 'bn1')(x))
    pooled = common.global_pool(last)
    return L.head(self.num_classes)(pooled), stage3, last, pooled


def resnet_trunk(L: common.Layers, x, n: int, block: str, feats: dict, *, train: bool):
  """Stem, stage 1 and stage 2 of a CIFAR resnet{6n+2}, shared by the multi-branch nets.

  Call inside a parent's compact method: the modules get the parent's top-level names
  (`conv1`, `bn1`, `layer{1,2}_{i}`, as the plain `resnet{d}`). Writes `stem`,
  `stage1`, `stage2` into `feats`; returns stage 2's output.
  """
  block_cls = common.BasicBlock if block == 'basic' else common.Bottleneck
  x = L.conv(16, 3, name='conv1')(x)
  x = feats['stem'] = nn.relu(L.bn(train, 'bn1')(x))
  for k, planes in ((1, 16), (2, 32)):
    for i in range(n):
      x, _ = block_cls(planes, 2 if (k > 1 and i == 0) else 1, layers=L,
                       name=f'layer{k}_{i}')(x, train=train)
    feats[f'stage{k}'] = x
  return x


def resnet_depth(base_arch: str, prefix: str) -> int | None:
  """6n+2 from 'resnet{6n+2}' (ValueError on another depth), None for another name."""
  m = _RESNET.fullmatch(base_arch)
  if not m:
    return None
  d = int(m.group(1))
  if d < 8 or (d - 2) % 6:
    raise ValueError(f'{prefix}_{base_arch}: CIFAR ResNet depth must be 6n+2 with n >= 1, got {d}.')
  return d


class ONENet(nn.Module):
  """Multi-branch ONE network.

  Attributes:
    family: 'resnet' or 'wrn'.
    depth: base depth (6n+2 for resnet, 6n+4 for wrn).
    width: WRN widen factor (ignored for resnet).
    num_classes: classifier outputs.
    branches: number of stage-3 branches m (ONE: 3).
    block: 'basic' | 'bottleneck' (resnet only).
    arch: name for messages, e.g. 'one_resnet32'.
  """
  family: str
  depth: int
  num_classes: int
  width: int = 1
  branches: int = 3
  block: str = 'basic'
  arch: str = 'one'
  dtype: Any = None
  bn_unbiased_running_var: bool = False

  def spec(self) -> ModelSpec:
    branch = [f'branch{b}/{k}' for b in range(self.branches) for k in ('stage3', 'pooled', 'logits')]
    names = ('stem', 'stage1', 'stage2', 'gate', *branch, 'stage3', 'last_map', 'pooled',
             'ensemble/logits')
    if self.family == 'resnet':
      stem, unit = names_regex(['conv1', 'bn1']), 'layer'
    else:
      stem, unit = '^conv1/', 'block'
    # Stage 3 exists once per branch: params_up_to(3) is every branch's stage 3
    # (the `stage3` feature itself is branch 0's).
    return ModelSpec(
        arch=self.arch, feature_names=names, num_stages=3, num_blocks=0, bn_before_relu={},
        has_forward_from=False,
        stage_params=((stem,), (rf'^{unit}1_\d+/',), (rf'^{unit}2_\d+/',),
                      (rf'^branch\d+/{unit}3_\d+/',)))

  @nn.compact
  def __call__(self, x, *, train: bool = False, branch_scale: Any = None):
    common.no_branch_scale(branch_scale, self.arch)
    L = common.layers_of(self)
    feats = {}
    if self.family == 'resnet':
      n = (self.depth - 2) // 6
      x = resnet_trunk(L, x, n, self.block, feats, train=train)
      make_branch = lambda b: _ResNetBranch(n, 64, self.block, self.num_classes, layers=L,
                                            name=f'branch{b}')
    else:
      n = (self.depth - 4) // 6
      x = feats['stem'] = L.conv(16, 3, name='conv1')(x)
      for k, c in ((1, 16 * self.width), (2, 32 * self.width)):
        for i in range(n):
          x, _ = WideBlock(c, 2 if (k > 1 and i == 0) else 1, layers=L, name=f'block{k}_{i}')(
              x, train=train)
        feats[f'stage{k}'] = x
      make_branch = lambda b: _WRNBranch(n, 64 * self.width, self.num_classes, layers=L,
                                         name=f'branch{b}')

    # Gate: GAP(stage2) -> Linear(C2, m) -> BatchNorm1d(m) -> ReLU -> softmax.
    g = L.dense(self.branches, name='gate_fc')(common.global_pool(x))
    g = nn.relu(L.bn(train, 'gate_bn')(g))
    g = feats['gate'] = jax.nn.softmax(g, axis=-1)

    ensemble = 0.0
    for b in range(self.branches):
      logits, stage3, last, pooled = make_branch(b)(x, train=train)
      feats[f'branch{b}/stage3'] = stage3
      feats[f'branch{b}/pooled'] = pooled
      feats[f'branch{b}/logits'] = logits
      if b == 0:
        feats['stage3'], feats['last_map'], feats['pooled'] = stage3, last, pooled
      ensemble = ensemble + g[:, b:b + 1] * logits
    feats['ensemble/logits'] = ensemble
    feats['logits'] = ensemble
    return common.float32_outputs(ensemble, feats)




def create_one(base_arch: str, num_classes: int, branches: int = 3, block: str = 'basic',
               **kw) -> ONENet:
  """ONE network on `base_arch` ('resnet{6n+2}' or 'wrn_{6n+4}_{w}').

  Args:
    base_arch: the single-branch architecture each branch reproduces.
    num_classes: classifier outputs.
    branches: number of branches m (>= 1; ONE uses 3).
    block: resnet only: 'basic' (default, = kdjax's resnet{d}), 'bottleneck', or
      'auto' (bottleneck for depth >= 44, as the official ONE code).
    **kw: `dtype`, `bn_unbiased_running_var` (as every zoo model).

  Raises:
    ValueError: unknown base architecture, bad depth, branches < 1, bad block.
  """
  if branches < 1:
    raise ValueError(f'create_one: branches must be >= 1, got {branches}.')
  d = resnet_depth(base_arch, 'one')
  if d is not None:
    if block == 'auto':
      block = 'bottleneck' if d >= 44 else 'basic'
    if block not in ('basic', 'bottleneck'):
      raise ValueError(f"create_one: block must be 'basic', 'bottleneck' or 'auto', got {block!r}.")
    return ONENet('resnet', d, num_classes, branches=branches, block=block, arch=f'one_{base_arch}',
                  **kw)
  m = _WRN.fullmatch(base_arch)
  if m:
    d, w = int(m.group(1)), int(m.group(2))
    if d < 10 or (d - 4) % 6 or w < 1:
      raise ValueError(f'one_{base_arch}: WRN depth must be 6n+4 (n >= 1) and width >= 1.')
    return ONENet('wrn', d, num_classes, width=w, branches=branches, arch=f'one_{base_arch}',
                  **kw)
  raise ValueError(f'create_one: unsupported base architecture {base_arch!r}; use resnet{{6n+2}} '
                   'or wrn_{6n+4}_{w}.')


FACTORIES: dict = {}   # one_<base> names are parsed by `match`
PATTERN_HELP = 'one_<base> (base resnet{6n+2} or wrn_d_w)'


match = common.prefix_matcher('one_', create_one)


__all__ = ['ONENet', 'create_one', 'resnet_depth', 'resnet_trunk']
