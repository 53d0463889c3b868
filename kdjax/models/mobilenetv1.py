"""MobileNetV1: ImageNet (mdistiller `imagenet/mobilenetv1.py`) and CIFAR (IE-KD's `mobilenet`).

Synopsis:
  MobileNetV1(num_classes)                          'mobilenetv1', the CRD/DKD ImageNet student
  MobileNetV1(num_classes, CIFAR_LAYERS, 1, 'mobilenetv1_cifar', ie_init=True)
                                                    'mobilenetv1_cifar', IE-DML's "MobileNet"

mobilenetv1_cifar follows the official IE-KD code's `model/mobilenet.py` (the
student of its DML MobileNet/ResNet-32 CIFAR-100 config): the same 13 layers
and widths, but a stride-1 stem and stride 2 only at layers 4 and 6 (32 -> 16 ->
8 px for 32x32 inputs), 3.31M parameters with 100 classes (the layer widths are
the ImageNet net's, so with 1000 classes both have 4,231,976). Its init, also
from that code: depthwise kernels N(0, 2 / 9) (fan_out = 3 x 3 only), other convs
Kaiming-normal fan_out, the classifier N(0, 0.01^2) with zero bias.

layer0: conv3x3/2 3 -> 32 + BN + ReLU; layers 1..13: depthwise 3x3 + BN + ReLU,
pointwise 1x1 + BN + ReLU with (out, stride) = (64,1) (128,2) (128,1) (256,2)
(256,1) (512,2) (512,1)x5 (1024,2) (1024,1); global average pooling (mdistiller's
AvgPool(7) at 224 px) and `head` (1024 -> K). No conv biases; 4.23M parameters.

Features (mdistiller feats / preact_feats; the same layers for mobilenetv1_cifar):
  stem          layer0 output (after ReLU; stride 2, CIFAR: 1).
  stageK        relu of the outputs of layers 3, 5, 11, 13 (128/256/512/1024 ch;
                strides 4, 8, 16, 32; CIFAR: 1, 2, 4, 4).
  stageK_preact the same before the final ReLU (the pointwise BN output).
  last_map      = stage4; pooled = mean over H, W.

Parameter names: `layer0` (`conv`, `bn`), `layer{i}` (`dw_conv`, `dw_bn`, `pw_conv`,
`pw_bn`), `head`. bn_before_relu: `pw_bn` of layers 3, 5, 11, 13 (mdistiller).
No residual blocks: `branch_scale` raises.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from kdjax.models import common, initializers
from kdjax.models.spec import ModelSpec, names_regex, standard_features

_LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
           (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
# IE-KD `mobilenet.cfg`: [64, 128, 128, (256, 2), 256, (512, 2), 512 x 5, 1024, 1024].
CIFAR_LAYERS = ((64, 1), (128, 1), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
                (512, 1), (512, 1), (512, 1), (1024, 1), (1024, 1))
_STAGE_ENDS = (3, 5, 11, 13)
# IE-KD's dw_conv_init: N(0, sqrt(2 / (k * k))), fan_out without the channel count.
_IE_DW_INIT = initializers.normal(stddev=(2.0 / 9.0) ** 0.5)
_IE_HEAD_INIT = initializers.normal(stddev=0.01)


class DepthwiseSeparable(nn.Module):
  features: int
  stride: int
  layers: common.Layers = common.DEFAULT
  ie_init: bool = False

  @nn.compact
  def __call__(self, x, *, train: bool):
    L = self.layers
    c = x.shape[-1]
    init = _IE_DW_INIT if self.ie_init else common.conv_kernel_init
    x = L.conv(c, 3, self.stride, groups=c, name='dw_conv', kernel_init=init)(x)
    x = nn.relu(L.bn(train, 'dw_bn')(x))
    x = L.conv(self.features, 1, name='pw_conv')(x)
    return L.bn(train, 'pw_bn')(x)  # pre-ReLU


class ConvBN(nn.Module):
  features: int
  stride: int = 1
  layers: common.Layers = common.DEFAULT

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = self.layers.conv(self.features, 3, self.stride, name='conv')(x)
    return nn.relu(self.layers.bn(train, 'bn')(x))


class MobileNetV1(nn.Module):
  """Attributes: num_classes, layer_cfg ((out, stride) of layers 1..13), stem_stride,
  arch, ie_init (IE-KD's initialisation), dtype (compute dtype), bn_unbiased_running_var
  (see common.BatchNorm)."""
  num_classes: int
  layer_cfg: tuple[tuple[int, int], ...] = _LAYERS
  stem_stride: int = 2
  arch: str = 'mobilenetv1'
  ie_init: bool = False
  dtype: Any = None
  bn_unbiased_running_var: bool = False

  def bn_before_relu(self) -> dict[str, tuple[str, ...]]:
    return {f'stage{k + 1}_preact': (f'layer{i}', 'pw_bn') for k, i in enumerate(_STAGE_ENDS)}

  def spec(self) -> ModelSpec:
    stages = [('^layer0/',)]
    prev = 0
    for end in _STAGE_ENDS:
      stages.append((names_regex([f'layer{i}' for i in range(prev + 1, end + 1)]),))
      prev = end
    return ModelSpec(
        arch=self.arch, feature_names=standard_features(4), num_stages=4, num_blocks=0,
        bn_before_relu=self.bn_before_relu(), has_forward_from=False, stage_params=tuple(stages))

  @nn.compact
  def __call__(self, x, *, train: bool = False, branch_scale: Any = None):
    common.no_branch_scale(branch_scale, self.arch)
    L = common.layers_of(self)
    feats = {}
    x = feats['stem'] = ConvBN(32, self.stem_stride, layers=L, name='layer0')(x, train=train)
    for i, (out, stride) in enumerate(self.layer_cfg, start=1):
      pre = DepthwiseSeparable(out, stride, layers=L, ie_init=self.ie_init, name=f'layer{i}')(
          x, train=train)
      x = nn.relu(pre)
      if i in _STAGE_ENDS:
        k = _STAGE_ENDS.index(i) + 1
        feats[f'stage{k}_preact'], feats[f'stage{k}'] = pre, x
    feats['last_map'] = x
    x = feats['pooled'] = common.global_pool(x)
    head_init = _IE_HEAD_INIT if self.ie_init else common.dense_kernel_init
    x = feats['logits'] = L.head(self.num_classes, kernel_init=head_init)(x)
    return common.float32_outputs(x, feats)


FACTORIES = {
    'mobilenetv1': lambda k, **kw: MobileNetV1(k, **kw),
    'mobilenetv1_cifar': lambda k, **kw: MobileNetV1(k, CIFAR_LAYERS, 1, 'mobilenetv1_cifar',
                                                     ie_init=True, **kw),
}
