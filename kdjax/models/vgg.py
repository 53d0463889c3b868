"""VGG with BatchNorm for CIFAR (RD `vgg.py`, `batch_norm=True`; FC layers removed).

Synopsis:
  VGG(cfg, num_classes, arch)      cfg = five tuples of conv widths
  CONFIGS['vgg8' | 'vgg11' | 'vgg13' | 'vgg16' | 'vgg19']

Every conv is 3x3 WITH bias (as RD), followed by BN and ReLU; the last ReLU of
each block is applied outside the block, which exposes the pre-ReLU output.
MaxPool 2x2 after blocks 0, 1, 2; after block 3 only when the input is 64x64 (RD).
Then global average pooling and `head` (Linear 512 -> K).

Features:
  stem          relu(block0 output) (RD feat[0], before pool0).
  stageK        relu(blockK output), K = 1..4 (RD feat[K]); on 32x32 inputs stage3
                and stage4 are both 4x4.
  stageK_preact blockK output before that ReLU (its last BN's output).
  last_map      = stage4; pooled = mean over H, W (RD feat[-1]).

Parameter names: `block{b}_conv{j}`, `block{b}_bn{j}` (b = 0..4, j = 0..), `head`.
bn_before_relu: stageK_preact -> the last BN of block K (RD/OFD get_bn_before_relu).
VGG has no residual blocks: `branch_scale` raises.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from kdjax.models import common
from kdjax.models.spec import ModelSpec, standard_features

CONFIGS = {
    'vgg8': ((64,), (128,), (256,), (512,), (512,)),
    'vgg11': ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    'vgg13': ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    'vgg16': ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    'vgg19': ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def _maxpool(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2))


class VGG(nn.Module):
  """Attributes: cfg (five tuples of conv widths), num_classes, arch (name), dtype
  (compute dtype), bn_unbiased_running_var (see common.BatchNorm)."""
  cfg: tuple[tuple[int, ...], ...]
  num_classes: int
  arch: str = 'vgg'
  dtype: Any = None
  bn_unbiased_running_var: bool = False

  def bn_before_relu(self) -> dict[str, tuple[str, ...]]:
    return {f'stage{b}_preact': (f'block{b}_bn{len(self.cfg[b]) - 1}',) for b in range(1, 5)}

  def spec(self) -> ModelSpec:
    return ModelSpec(
        arch=self.arch, feature_names=standard_features(4), num_stages=4, num_blocks=0,
        bn_before_relu=self.bn_before_relu(), has_forward_from=False,
        stage_params=tuple((rf'^block{b}_(conv|bn)\d+/',) for b in range(5)))

  def _block(self, x, b: int, train: bool):
    L = common.layers_of(self)
    for j, w in enumerate(self.cfg[b]):
      if j:
        x = nn.relu(x)
      x = L.conv(w, 3, use_bias=True, name=f'block{b}_conv{j}')(x)
      x = L.bn(train, f'block{b}_bn{j}')(x)
    return x

  @nn.compact
  def __call__(self, x, *, train: bool = False, branch_scale: Any = None):
    common.no_branch_scale(branch_scale, self.arch)
    pool3 = x.shape[1] == 64
    feats = {}
    x = feats['stem'] = nn.relu(self._block(x, 0, train))
    x = _maxpool(x)
    for b in range(1, 5):
      x = feats[f'stage{b}_preact'] = self._block(x, b, train)
      x = feats[f'stage{b}'] = nn.relu(x)
      if b < 3 or (b == 3 and pool3):
        x = _maxpool(x)
    feats['last_map'] = x
    x = feats['pooled'] = common.global_pool(x)
    x = feats['logits'] = common.layers_of(self).head(self.num_classes)(x)
    return common.float32_outputs(x, feats)


FACTORIES = {name: (lambda k, cfg=cfg, name=name, **kw: VGG(cfg, k, arch=name, **kw))
             for name, cfg in CONFIGS.items()}
