"""Wide ResNet WRN-d-w, pre-activation (RD `wrn.py`, dropout 0).

Synopsis:
  WideResNet(depth, width, num_classes)

n = (d - 4) / 6 units per group, channels 16, 16w, 32w, 64w, strides 1, 2, 2.
Unit: o = relu(bn1(x)); branch = conv2(relu(bn2(conv1(o)))); shortcut = x when
in == out, else conv_shortcut(o) (1x1, applied to the BN-ReLU'd input as in RD);
out = shortcut + scale * branch. Head: relu(bn1(.)) -> mean over H, W -> head.

Features:
  stem          conv1 output (RD feat[0]; no BN/ReLU yet).
  stageK        output of group K, PRE-ACTIVATION (no BN/ReLU), as RD's feat[K].
  stageK_preact stageK passed through the next BN: bn1 of the first unit of group
                K+1, or the final `bn1` for the last group (RD preact=True). It is
                taken from the forward pass itself, so BN statistics are not
                updated twice.
  last_map      relu(bn1(stage3)), the map that is pooled.
  pooled        mean over H, W of last_map (RD feat[-1]).

Partial forward: `forward_from(h, k)` runs groups k+1..3 and the head on a
`stagek` map (SRRL's L_SR at earlier layers); `apply(..., method='forward_from')`.

Parameter names: `conv1`, `block{K}_{i}` (with `bn1`, `conv1`, `bn2`, `conv2`,
`conv_shortcut`), final `bn1`, `head`.

Stochastic depth: `branch_scale` [num_blocks = 3n] scales each unit's branch.
A unit with scale 0 reduces to its shortcut: x for equal in/out, and
conv_shortcut(relu(bn1(x))) for the first unit of a group that changes width.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import flax.linen as nn

from kdjax.models import common
from kdjax.models.spec import ModelSpec, standard_features


class WideBlock(nn.Module):
  """One pre-activation unit; returns (out, bn1(x)) so the caller can expose RD's preact."""
  features: int
  stride: int = 1
  layers: common.Layers = common.DEFAULT

  @nn.compact
  def __call__(self, x, scale=None, *, train: bool):
    L = self.layers
    equal = x.shape[-1] == self.features and self.stride == 1
    normed = L.bn(train, 'bn1')(x)
    o = nn.relu(normed)
    y = L.conv(self.features, 3, self.stride, name='conv1')(o)
    y = nn.relu(L.bn(train, 'bn2')(y))
    y = L.conv(self.features, 3, name='conv2')(y)
    if scale is not None:
      y = y * scale
    shortcut = x if equal else L.conv(self.features, 1, self.stride, name='conv_shortcut')(o)
    return shortcut + y, normed


class WideResNet(nn.Module):
  """RD WideResNet. Attributes: depth (6n+4), width (widen factor), num_classes,
  dtype (compute dtype), bn_unbiased_running_var (see common.BatchNorm)."""
  depth: int
  width: int
  num_classes: int
  dtype: Any = None
  bn_unbiased_running_var: bool = False

  def __post_init__(self):
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f'WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), '
                       f'got {self.depth}: wrn_{self.depth}_{self.width}.')
    if self.width < 1:
      raise ValueError(f'WRN width must be >= 1, got {self.width}.')
    super().__post_init__()

  @property
  def num_blocks(self) -> int:
    """Number of residual units L = 3n."""
    return 3 * ((self.depth - 4) // 6)

  def bn_before_relu(self) -> dict[str, tuple[str, ...]]:
    """RD/OFD: bn1 of the next group's first unit, and the final bn1."""
    return {'stage1_preact': ('block2_0', 'bn1'), 'stage2_preact': ('block3_0', 'bn1'),
            'stage3_preact': ('bn1',)}

  def spec(self) -> ModelSpec:
    # stageK is the pre-activation output of group K: conv1 and groups 1..K compute it.
    return ModelSpec(
        arch=f'wrn_{self.depth}_{self.width}', feature_names=standard_features(3), num_stages=3,
        num_blocks=self.num_blocks, bn_before_relu=self.bn_before_relu(), has_forward_from=True,
        stage_params=(('^conv1/',),) + tuple((rf'^block{k}_\d+/',) for k in range(1, 4)))

  def __call__(self, x, *, train: bool = False, branch_scale: Any = None):
    return self._forward(x, train=train, branch_scale=branch_scale, start=0)

  def forward_from(self, h, stage: int, *, train: bool = False):
    """Logits from the output of group `stage` (feature `stage{stage}`, pre-activation).

    Runs groups stage+1..3, the final BN-ReLU, pooling and `head` with this
    model's parameters (use `model.apply(variables, h, k, method='forward_from')`);
    stage 3 leaves only bn1-ReLU-pool-head. forward_from(feats['stageK'], K) equals
    the full forward's logits (same `train` mode). No stochastic depth here.
    """
    if not 1 <= stage <= 3:
      raise ValueError(f'wrn_{self.depth}_{self.width}.forward_from: stage must be 1, 2 or 3, '
                       f'got {stage}.')
    return self._forward(h, train=train, branch_scale=None, start=stage)[0]

  @nn.compact
  def _forward(self, x, *, train: bool, branch_scale: Any, start: int):
    n = (self.depth - 4) // 6
    scales = common.branch_scales(branch_scale, self.num_blocks, f'wrn_{self.depth}_{self.width}')
    widths = (16 * self.width, 32 * self.width, 64 * self.width)
    L = common.layers_of(self)
    feats = {}
    if start == 0:
      x = feats['stem'] = L.conv(16, 3, name='conv1')(x)
    l = 0
    for g in range(3):
      if g < start:  # already done: x is the output of group `start`
        l += n
        continue
      for i in range(n):
        stride = 2 if (g > 0 and i == 0) else 1
        x, normed = WideBlock(widths[g], stride, layers=L, name=f'block{g + 1}_{i}')(x, scales[l], train=train)
        if g > 0 and i == 0:
          feats[f'stage{g}_preact'] = normed
        l += 1
      feats[f'stage{g + 1}'] = x
    x = feats['stage3_preact'] = L.bn(train, 'bn1')(x)
    x = feats['last_map'] = nn.relu(x)
    x = feats['pooled'] = common.global_pool(x)
    x = feats['logits'] = L.head(self.num_classes)(x)
    return common.float32_outputs(x, feats)


# WRN variants that RD/CRD and the seed papers use; any valid wrn_d_w is accepted.
_LISTED = ('wrn_16_1', 'wrn_16_2', 'wrn_40_1', 'wrn_40_2', 'wrn_10_2', 'wrn_28_2', 'wrn_16_4',
           'wrn_28_4', 'wrn_40_4', 'wrn_46_4', 'wrn_10_10', 'wrn_16_10', 'wrn_28_10')
_WRN_RE = re.compile(r'wrn_(\d+)_(\d+)')
PATTERN_HELP = 'wrn_{depth}_{width} with (depth - 4) % 6 == 0'


def match(name: str) -> Callable[..., nn.Module] | None:
  """A factory for any wrn_{d}_{w} name (validated), else None."""
  m = _WRN_RE.fullmatch(name)
  if not m:
    return None
  d, w = int(m.group(1)), int(m.group(2))
  if d < 10 or (d - 4) % 6:
    raise ValueError(f'{name}: WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, 40, ...), '
                     f'got depth {d} ((depth - 4) % 6 = {(d - 4) % 6}).')
  if w < 1:
    raise ValueError(f'{name}: WRN width must be >= 1.')
  return lambda k, **kw: WideResNet(d, w, k, **kw)


FACTORIES = {name: match(name) for name in _LISTED}
