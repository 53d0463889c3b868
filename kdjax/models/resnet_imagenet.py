"""torchvision ImageNet ResNet18/34/50 (the mdistiller / CRD ImageNet teachers and students).

Synopsis:
  resnet_imagenet(18|34|50, num_classes) -> ResNet

Stem conv7x7 stride 2 (no bias) + BN + ReLU + maxpool3x3 stride 2, then four
stages (64/128/256/512 planes; bottleneck expansion 4 with the stride on the 3x3
conv, torchvision "v1.5"), global average pooling and `head`. It is the shared
`resnet_cifar.ResNet` class with `imagenet_stem=True`, so blocks, parameter
names, features, `bn_before_relu` and `branch_scale` are as documented there.

Features vs. mdistiller: `stem` = relu(bn1(conv1(x))) before the max-pool
(mdistiller feats[0]); `stageK` = relu(layerK output) (mdistiller feats[K]);
`stageK_preact` = the pre-ReLU output of stage K (mdistiller preact_feats[K]).
mdistiller's `get_bn_before_relu` lists stages 2..4 only; `bn_before_relu`
also includes stage 1 (same rule: bn2 / bn3 of the stage's last block).
"""

from __future__ import annotations

from kdjax.models.resnet_cifar import ResNet

_CONFIGS = {18: ('basic', (2, 2, 2, 2)), 34: ('basic', (3, 4, 6, 3)),
            50: ('bottleneck', (3, 4, 6, 3))}


def resnet_imagenet(depth: int, num_classes: int, **kw) -> ResNet:
  """torchvision `resnet{depth}` (11.69M / 21.80M / 25.56M parameters with 1000 classes)."""
  block, sizes = _CONFIGS[depth]
  return ResNet(block, sizes, (64, 64, 128, 256, 512), num_classes, imagenet_stem=True,
                arch=f'resnet{depth}', **kw)


# Registered after the CIFAR family: these names shadow resnet{6n+2} (50 = 6*8+2).
FACTORIES = {f'resnet{d}': (lambda k, d=d, **kw: resnet_imagenet(d, k, **kw)) for d in _CONFIGS}
