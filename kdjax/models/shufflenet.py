"""ShuffleNetV1 (g = 3) and ShuffleNetV2 (net_size 1) for CIFAR (RD `ShuffleNetv1.py`, `ShuffleNetv2.py`).

Synopsis:
  ShuffleNetV1(num_classes, out_planes=(240, 480, 960), stage_sizes=(4, 8, 4), groups=3)
  ShuffleNetV2(num_classes, out_channels=(116, 232, 464, 1024), stage_sizes=(3, 7, 3))

Both: stem conv1x1 3 -> 24 (no stride) + BN + ReLU, three stages at strides 2, 2, 2
(32 -> 16 -> 8 -> 4 for 32x32 inputs), global average pooling, `head`. Convs have no bias.

V1 unit: gconv1x1 (groups 1 when in = 24) + BN + ReLU, channel shuffle, dw3x3 + BN
+ ReLU, gconv1x1 + BN, then + x (stride 1) or concat with AvgPool3x3/2 (pad 1,
count_include_pad, as PyTorch) of x (first unit of each stage, whose branch then
outputs out - in channels), then ReLU.
V2: stage = DownBlock (stride 2, two branches, concat, shuffle) + n basic units
(split in half, 1x1-BN-ReLU, dw3x3-BN, 1x1-BN-ReLU on the second half, concat,
shuffle with 2 groups). After stage 3: conv1x1 -> 1024 + BN + ReLU.

Features (RD feat list):
  stem          relu(bn1(conv1(x))).
  stageK        stage outputs (V1: after ReLU; V2: after the final shuffle).
  stageK_preact V1: pre-ReLU add/concat of the stage's last unit. V2 (as RD): the
                concat [x1, bn3(...)] of the last unit BEFORE its ReLU and BEFORE the
                channel shuffle, so its channel order differs from stageK's.
  last_map      V1: stage3; V2: the 1024-channel relu(bn2(conv2(stage3))).
  pooled        mean over H, W of last_map.

bn_before_relu: RD raises NotImplementedError for both. kdjax returns the
ResNet-style analogue: `bn3` of the last unit of each stage. For V1 its output plus
the identity shortcut is exactly what the ReLU sees. For V2 it covers only the second
half of the stageK_preact channels (the first half x1 passes through unchanged), so
its scale/bias have C/2 entries, so `spec().bn_before_relu` lists no stage for V2
(OFD margins are undefined there); `bn_before_relu()` still returns the analogue.

Parameter names: `conv1`, `bn1`, `layer{K}_{i}` (conv1..conv5 / bn1..bn5), V2 `conv2`,
`bn2`, and `head`. No stochastic depth: `branch_scale` raises.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdjax.models import common
from kdjax.models.spec import ModelSpec, names_regex, standard_features


def _shuffle_spec(arch: str, num_stages: int, bn_map) -> ModelSpec:
  return ModelSpec(
      arch=arch, feature_names=standard_features(num_stages), num_stages=num_stages,
      num_blocks=0, bn_before_relu=bn_map, has_forward_from=False,
      stage_params=((names_regex(['conv1', 'bn1']),),)
      + tuple((rf'^layer{k}_\d+/',) for k in range(1, num_stages + 1)))


def _stem(x, train, L):
  x = L.conv(24, 1, name='conv1')(x)
  return nn.relu(L.bn(train, 'bn1')(x))


class ShuffleV1Unit(nn.Module):
  out_planes: int
  stride: int
  groups: int
  layers: common.Layers = common.DEFAULT

  @nn.compact
  def __call__(self, x, *, train: bool):
    L = self.layers
    mid = self.out_planes // 4
    g = 1 if x.shape[-1] == 24 else self.groups
    y = L.conv(mid, 1, groups=g, name='conv1')(x)
    y = nn.relu(L.bn(train, 'bn1')(y))
    y = common.channel_shuffle(y, g)
    y = L.conv(mid, 3, self.stride, groups=mid, name='conv2')(y)
    y = nn.relu(L.bn(train, 'bn2')(y))
    y = L.conv(self.out_planes, 1, groups=self.groups, name='conv3')(y)
    y = L.bn(train, 'bn3')(y)
    if self.stride == 2:
      res = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=True)
      preact = jnp.concatenate([y, res], axis=-1)
    else:
      preact = y + x
    return nn.relu(preact), preact


class ShuffleNetV1(nn.Module):
  num_classes: int
  out_planes: tuple[int, ...] = (240, 480, 960)
  stage_sizes: tuple[int, ...] = (4, 8, 4)
  groups: int = 3
  dtype: Any = None
  bn_unbiased_running_var: bool = False

  def bn_before_relu(self) -> dict[str, tuple[str, ...]]:
    return {f'stage{k + 1}_preact': (name, 'bn3')
            for k, name in enumerate(common.last_names('layer', self.stage_sizes))}

  def spec(self) -> ModelSpec:
    return _shuffle_spec('shufflenetv1', len(self.stage_sizes), self.bn_before_relu())

  @nn.compact
  def __call__(self, x, *, train: bool = False, branch_scale: Any = None):
    common.no_branch_scale(branch_scale, 'shufflenetv1')
    L = common.layers_of(self)
    feats = {}
    x = feats['stem'] = _stem(x, train, L)
    for k, (out, n) in enumerate(zip(self.out_planes, self.stage_sizes)):
      for i in range(n):
        planes = out - x.shape[-1] if i == 0 else out
        x, pre = ShuffleV1Unit(planes, 2 if i == 0 else 1, self.groups, layers=L,
                               name=f'layer{k + 1}_{i}')(x, train=train)
      feats[f'stage{k + 1}'], feats[f'stage{k + 1}_preact'] = x, pre
    feats['last_map'] = x
    x = feats['pooled'] = common.global_pool(x)
    x = feats['logits'] = L.head(self.num_classes)(x)
    return common.float32_outputs(x, feats)


class ShuffleV2Down(nn.Module):
  out_channels: int
  layers: common.Layers = common.DEFAULT

  @nn.compact
  def __call__(self, x, *, train: bool):
    L = self.layers
    c_in, mid = x.shape[-1], self.out_channels // 2
    bn = lambda i: L.bn(train, f'bn{i}')  # noqa: E731
    left = bn(1)(L.conv(c_in, 3, 2, groups=c_in, name='conv1')(x))
    left = nn.relu(bn(2)(L.conv(mid, 1, name='conv2')(left)))
    right = nn.relu(bn(3)(L.conv(mid, 1, name='conv3')(x)))
    right = bn(4)(L.conv(mid, 3, 2, groups=mid, name='conv4')(right))
    right = nn.relu(bn(5)(L.conv(mid, 1, name='conv5')(right)))
    return common.channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class ShuffleV2Unit(nn.Module):
  layers: common.Layers = common.DEFAULT

  @nn.compact
  def __call__(self, x, *, train: bool):
    L = self.layers
    c = x.shape[-1] // 2
    x1, x2 = x[..., :c], x[..., c:]
    cb = x2.shape[-1]
    y = nn.relu(L.bn(train, 'bn1')(L.conv(cb, 1, name='conv1')(x2)))
    y = L.bn(train, 'bn2')(L.conv(cb, 3, groups=cb, name='conv2')(y))
    y = L.bn(train, 'bn3')(L.conv(cb, 1, name='conv3')(y))
    preact = jnp.concatenate([x1, y], axis=-1)
    out = jnp.concatenate([x1, nn.relu(y)], axis=-1)
    return common.channel_shuffle(out, 2), preact


class ShuffleNetV2(nn.Module):
  num_classes: int
  out_channels: tuple[int, ...] = (116, 232, 464, 1024)
  stage_sizes: tuple[int, ...] = (3, 7, 3)
  dtype: Any = None
  bn_unbiased_running_var: bool = False

  def bn_before_relu(self) -> dict[str, tuple[str, ...]]:
    # layer{K}_0 is the DownBlock, so the last basic unit of stage K is layer{K}_{n_K}.
    return {f'stage{k + 1}_preact': (f'layer{k + 1}_{n}', 'bn3')
            for k, n in enumerate(self.stage_sizes)}

  def spec(self) -> ModelSpec:
    # No BN precedes the whole pre-ReLU map (half the channels bypass bn3), so OFD
    # margins are undefined: the spec lists none (bn_before_relu() keeps the analogue).
    return _shuffle_spec('shufflenetv2', len(self.stage_sizes), {})

  @nn.compact
  def __call__(self, x, *, train: bool = False, branch_scale: Any = None):
    common.no_branch_scale(branch_scale, 'shufflenetv2')
    L = common.layers_of(self)
    feats = {}
    x = feats['stem'] = _stem(x, train, L)
    for k, n in enumerate(self.stage_sizes):
      x = ShuffleV2Down(self.out_channels[k], layers=L, name=f'layer{k + 1}_0')(x, train=train)
      for i in range(1, n + 1):
        x, pre = ShuffleV2Unit(layers=L, name=f'layer{k + 1}_{i}')(x, train=train)
      feats[f'stage{k + 1}'], feats[f'stage{k + 1}_preact'] = x, pre
    x = L.conv(self.out_channels[3], 1, name='conv2')(x)
    x = feats['last_map'] = nn.relu(L.bn(train, 'bn2')(x))
    x = feats['pooled'] = common.global_pool(x)
    x = feats['logits'] = L.head(self.num_classes)(x)
    return common.float32_outputs(x, feats)


FACTORIES = {'shufflenetv1': lambda k, **kw: ShuffleNetV1(k, **kw),
             'shufflenetv2': lambda k, **kw: ShuffleNetV2(k, **kw)}
