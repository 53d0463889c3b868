"""Post-activation ResNets: RD `resnet.py` (resnet8..110, x4) and RD `resnetv2.py`.

Synopsis:
  ResNet(block, stage_sizes, widths, num_classes, imagenet_stem=False)
  cifar_resnet(depth, num_classes, wide=False)   RD resnet{6n+2} / resnet{6n+2}x4
  resnet_cifar(10|18|34|50, num_classes)         RD resnetv2 ResNet10/18/34/50

The same `ResNet` class, with `imagenet_stem=True`, gives the torchvision
ImageNet ResNets (see `resnet_imagenet.py`).

Features (`stem`, `stage1..S`, `stage1..S_preact`, `last_map`, `pooled`, `logits`):
  stem          relu(bn1(conv1(x))) (RD feat[0]); ImageNet stem: before the max-pool
                (mdistiller's feats[0]).
  stageK        output of stage K after the final ReLU (RD feat[K]).
  stageK_preact pre-ReLU sum (branch + shortcut) of the last block of stage K.
  last_map      = stageS;  pooled = mean over H, W of last_map (RD feat[-1]).

Partial forward: `forward_from(h, k)` runs stages k+1..S, pooling and the head on
a `stagek` map (SRRL's L_SR at earlier layers); `apply(..., method='forward_from')`.

Parameter names: `conv1`, `bn1` (stem), `layer{K}_{i}` (block i of stage K, with
`conv1..3`, `bn1..3`, `shortcut_conv`, `shortcut_bn`), `head`.

Stochastic depth: `branch_scale` [num_blocks] multiplies each block's residual
branch (block l counted across stages in order). A block with scale 0 reduces to
relu(shortcut(x)): the identity for ordinary blocks, the 1x1 conv + BN
projection for the first block of a stage that changes shape.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import flax.linen as nn

from kdjax.models import common
from kdjax.models.spec import ModelSpec, names_regex, standard_features


class ResNet(nn.Module):
  """Post-activation ResNet with a CIFAR (3x3, stride 1) or ImageNet (7x7/2 + max-pool) stem.

  Attributes:
    block: 'basic' or 'bottleneck'.
    stage_sizes: number of blocks per stage.
    widths: (stem channels, stage-1 planes, ..., stage-S planes); stage 1 has
      stride 1, the others stride 2.
    num_classes: classifier outputs.
    imagenet_stem: use the torchvision stem (conv7x7 s2 + BN + ReLU + maxpool3x3 s2).
    arch: name used in error messages.
    dtype: compute dtype of convs / dense layers (None = float32; e.g. jnp.bfloat16).
    bn_unbiased_running_var: BN running variance with PyTorch's n/(n-1) (see common.BatchNorm).
  """
  block: str
  stage_sizes: tuple[int, ...]
  widths: tuple[int, ...]
  num_classes: int
  imagenet_stem: bool = False
  arch: str = 'resnet'
  dtype: Any = None
  bn_unbiased_running_var: bool = False

  @property
  def num_blocks(self) -> int:
    """Number of residual blocks L (length of `branch_scale`)."""
    return sum(self.stage_sizes)

  def bn_before_relu(self) -> dict[str, tuple[str, ...]]:
    """stageK_preact -> the last BN of the last block of stage K (bn2 basic / bn3 bottleneck)."""
    bn = 'bn2' if self.block == 'basic' else 'bn3'
    return {f'stage{k + 1}_preact': (name, bn)
            for k, name in enumerate(common.last_names('layer', self.stage_sizes))}

  def spec(self) -> ModelSpec:
    s = len(self.stage_sizes)
    return ModelSpec(
        arch=self.arch, feature_names=standard_features(s), num_stages=s,
        num_blocks=self.num_blocks, bn_before_relu=self.bn_before_relu(), has_forward_from=True,
        stage_params=((names_regex(['conv1', 'bn1']),),)
        + tuple((rf'^layer{k}_\d+/',) for k in range(1, s + 1)))

  def __call__(self, x, *, train: bool = False, branch_scale: Any = None):
    return self._forward(x, train=train, branch_scale=branch_scale, start=0)

  def forward_from(self, h, stage: int, *, train: bool = False):
    """Logits from the output of stage `stage` (feature `stage{stage}`, after its ReLU).

    Runs stages stage+1..S, pooling and `head` with this model's parameters
    (`model.apply(variables, h, k, method='forward_from')`); stage S leaves only
    pool-head. forward_from(feats['stageK'], K) equals the full forward's logits.
    """
    if not 1 <= stage <= len(self.stage_sizes):
      raise ValueError(f'{self.arch}.forward_from: stage must be in 1..{len(self.stage_sizes)}, '
                       f'got {stage}.')
    return self._forward(h, train=train, branch_scale=None, start=stage)[0]

  @nn.compact
  def _forward(self, x, *, train: bool, branch_scale: Any, start: int):
    block_cls = common.BasicBlock if self.block == 'basic' else common.Bottleneck
    scales = common.branch_scales(branch_scale, self.num_blocks, self.arch)
    L = common.layers_of(self)
    feats = {}
    if start == 0:
      if self.imagenet_stem:
        x = L.conv(self.widths[0], 7, 2, name='conv1')(x)
      else:
        x = L.conv(self.widths[0], 3, name='conv1')(x)
      x = feats['stem'] = nn.relu(L.bn(train, 'bn1')(x))
      if self.imagenet_stem:
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    l = 0
    for k, n in enumerate(self.stage_sizes):
      if k < start:  # already done: x is the output of stage `start`
        l += n
        continue
      for i in range(n):
        stride = 2 if (k > 0 and i == 0) else 1
        x, pre = block_cls(self.widths[k + 1], stride, layers=L, name=f'layer{k + 1}_{i}')(
            x, scales[l], train=train)
        l += 1
      feats[f'stage{k + 1}'] = x
      feats[f'stage{k + 1}_preact'] = pre
    feats['last_map'] = x
    x = feats['pooled'] = common.global_pool(x)
    x = feats['logits'] = L.head(self.num_classes)(x)
    return common.float32_outputs(x, feats)

def cifar_resnet(depth: int, num_classes: int, wide: bool = False, arch: str | None = None,
                 **kw) -> ResNet:
  """RD `resnet{depth}` (widths 16/16/32/64) or `resnet{depth}x4` (32/64/128/256)."""
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f'CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 56, 110, ...), '
                     f'got {depth}.')
  n = (depth - 2) // 6
  widths = (32, 64, 128, 256) if wide else (16, 16, 32, 64)
  arch = arch or f'resnet{depth}' + ('x4' if wide else '')
  return ResNet('basic', (n, n, n), widths, num_classes, arch=arch, **kw)


# 10: SRRL's ResNet-10, resnetv2 with one BasicBlock per stage (4.95M parameters, 100 classes).
_CIFAR_V2 = {10: ('basic', (1, 1, 1, 1)), 18: ('basic', (2, 2, 2, 2)), 34: ('basic', (3, 4, 6, 3)),
             50: ('bottleneck', (3, 4, 6, 3))}


def resnet_cifar(depth: int, num_classes: int, **kw) -> ResNet:
  """RD `resnetv2.ResNet{10,18,34,50}`: torchvision widths, 3x3 stride-1 stem, no max-pool.

  ResNet-10 ([1, 1, 1, 1] basic blocks) is not in RD's file; it is its `ResNet` class
  with that configuration (SRRL's ResNet-34 -> ResNet-10 row).
  """
  block, sizes = _CIFAR_V2[depth]
  return ResNet(block, sizes, (64, 64, 128, 256, 512), num_classes,
                arch=f'resnet{depth}_cifar', **kw)


_LISTED_DEPTHS = (8, 14, 20, 26, 32, 44, 56, 110)
_RESNET_RE = re.compile(r'resnet(\d+)(x4)?')


def _table() -> dict[str, Callable[..., nn.Module]]:
  reg: dict[str, Callable[..., nn.Module]] = {}
  for d in _LISTED_DEPTHS:
    reg[f'resnet{d}'] = lambda k, d=d, **kw: cifar_resnet(d, k, **kw)
  for d in (8, 32):
    reg[f'resnet{d}x4'] = lambda k, d=d, **kw: cifar_resnet(d, k, wide=True, **kw)
  for d in _CIFAR_V2:
    reg[f'resnet{d}_cifar'] = lambda k, d=d, **kw: resnet_cifar(d, k, **kw)
  # Self-Guidance's CIFAR "ResNet-50": 6n+2 basic blocks with n = 8 (0.76M), which
  # the ImageNet `resnet50` shadows.
  reg['resnet50_basic'] = lambda k, **kw: cifar_resnet(50, k, arch='resnet50_basic', **kw)
  return reg


FACTORIES = _table()
PATTERN_HELP = 'resnet{6n+2}[x4]'


def match(name: str) -> Callable[..., nn.Module] | None:
  """A factory for an unlisted resnet{6n+2}[x4] name, else None."""
  m = _RESNET_RE.fullmatch(name)
  if m and int(m.group(1)) >= 8 and (int(m.group(1)) - 2) % 6 == 0:
    d, wide = int(m.group(1)), bool(m.group(2))
    return lambda k, **kw: cifar_resnet(d, k, wide=wide, **kw)
  return None
