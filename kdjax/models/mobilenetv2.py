"""MobileNetV2 for CIFAR (RD `mobilenetv2.py`; `mobile_half` = width 0.5, T = 6).

Synopsis:
  MobileNetV2(num_classes, width_mult=0.5, expansion=6)

Stem conv3x3 stride 2 -> int(32 w) channels + BN + ReLU. Seven groups of inverted
residuals (t, c, n, s) = (1,16,1,1) (T,24,2,1) (T,32,3,2) (T,64,4,2) (T,96,3,1)
(T,160,3,2) (T,320,1,1) with c -> int(c w). Each block: pw-expand 1x1 (present
even when t = 1) + BN + ReLU, dw3x3 + BN + ReLU, pw-linear 1x1 + BN; residual add
when stride 1 and in == out. Head conv1x1 -> 1280 (int(1280 w) if w > 1) + BN +
ReLU, global average pooling, `head`. All convs without bias.

Features (RD: f0 stem, f1..f4 after groups 1, 2, 4, 6):
  stem          stem output (16x16 for 32x32 inputs).
  stage1..4     outputs of groups 1, 2, 4, 6 (16, 8, 4, 2 px). These are linear-
                bottleneck outputs: no ReLU follows them inside the network.
  stageK_preact identical to stageK: RD's preact=True returns the same tensors.
  last_map      relu(bn(conv2(.))), the 1280-channel map; pooled = its H, W mean.

Parameter names: `conv1`, `bn1` (stem), `blocks{g}_{i}` (with `expand_conv`,
`expand_bn`, `dw_conv`, `dw_bn`, `project_conv`, `project_bn`), `conv2`, `bn2`, `head`.
bn_before_relu: RD's `get_bn_before_relu`, the pw-linear BN (`project_bn`) of the last
block of groups 1, 2, 4, 6 (there is no ReLU after it; that is what RD/OFD use).
MobileNetV2's inverted residuals are not used for stochastic depth: `branch_scale` raises.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from kdjax.models import common
from kdjax.models.spec import ModelSpec, names_regex, standard_features

_SETTING = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
            (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1))
_FEATURE_GROUPS = (1, 2, 4, 6)


class InvertedResidual(nn.Module):
  features: int
  stride: int
  expand: int
  layers: common.Layers = common.DEFAULT

  @nn.compact
  def __call__(self, x, *, train: bool):
    L = self.layers
    hidden = x.shape[-1] * self.expand
    y = L.conv(hidden, 1, name='expand_conv')(x)
    y = nn.relu(L.bn(train, 'expand_bn')(y))
    y = L.conv(hidden, 3, self.stride, groups=hidden, name='dw_conv')(y)
    y = nn.relu(L.bn(train, 'dw_bn')(y))
    y = L.conv(self.features, 1, name='project_conv')(y)
    y = L.bn(train, 'project_bn')(y)
    if self.stride == 1 and x.shape[-1] == self.features:
      y = x + y
    return y


class MobileNetV2(nn.Module):
  """Attributes: num_classes, width_mult (0.5 = RD mobile_half), expansion T, dtype
  (compute dtype), bn_unbiased_running_var (see common.BatchNorm)."""
  num_classes: int
  width_mult: float = 0.5
  expansion: int = 6
  dtype: Any = None
  bn_unbiased_running_var: bool = False

  def _blocks_per_group(self):
    return [n for _, _, n, _ in _SETTING]

  def bn_before_relu(self) -> dict[str, tuple[str, ...]]:
    counts = self._blocks_per_group()
    return {f'stage{k + 1}_preact': (f'blocks{g}_{counts[g] - 1}', 'project_bn')
            for k, g in enumerate(_FEATURE_GROUPS)}

  def spec(self) -> ModelSpec:
    # stageK is the output of group _FEATURE_GROUPS[K-1]: it needs every group up to it.
    stages = [(names_regex(['conv1', 'bn1']),)]
    prev = -1
    for g in _FEATURE_GROUPS:
      stages.append(tuple(rf'^blocks{j}_\d+/' for j in range(prev + 1, g + 1)))
      prev = g
    return ModelSpec(
        arch='mobilenetv2', feature_names=standard_features(4), num_stages=4, num_blocks=0,
        bn_before_relu=self.bn_before_relu(), has_forward_from=False, stage_params=tuple(stages))

  @nn.compact
  def __call__(self, x, *, train: bool = False, branch_scale: Any = None):
    common.no_branch_scale(branch_scale, 'mobilenetv2')
    w = self.width_mult
    L = common.layers_of(self)
    feats = {}
    x = L.conv(int(32 * w), 3, 2, name='conv1')(x)
    x = feats['stem'] = nn.relu(L.bn(train, 'bn1')(x))
    for g, (t, c, n, s) in enumerate(_SETTING):
      t = self.expansion if t is None else t
      for i in range(n):
        x = InvertedResidual(int(c * w), s if i == 0 else 1, t, layers=L, name=f'blocks{g}_{i}')(x, train=train)
      if g in _FEATURE_GROUPS:
        k = _FEATURE_GROUPS.index(g) + 1
        feats[f'stage{k}'] = feats[f'stage{k}_preact'] = x
    last = int(1280 * w) if w > 1.0 else 1280
    x = L.conv(last, 1, name='conv2')(x)
    x = feats['last_map'] = nn.relu(L.bn(train, 'bn2')(x))
    x = feats['pooled'] = common.global_pool(x)
    x = feats['logits'] = L.head(self.num_classes)(x)
    return common.float32_outputs(x, feats)


FACTORIES = {'mobilenetv2': lambda k, **kw: MobileNetV2(k, **kw)}
