"""Minimal PyTorch definitions of the kdjax zoo, for interop parity tests.

Written for these tests after the references' layer order, module names and
shapes (RepDistiller resnet / resnetv2 / wrn / vgg / mobilenetv2 / ShuffleV1 /
ShuffleV2, torchvision resnet18/34/50, mdistiller's ImageNet MobileNetV1), so a
state_dict exported by kdjax loads into them with strict=True and a published
checkpoint loads into kdjax. Global pooling is a mean over H, W (the references'
fixed AvgPool kernels at their input sizes). Every net returns
`(logits, feats)` with kdjax's feature names (NCHW tensors).

  build(arch, num_classes, in_ch=3) -> nn.Module
"""

from __future__ import annotations

import re

import torch
from torch import nn
import torch.nn.functional as F


def _conv(i, o, k, s=1, groups=1, bias=False):
  return nn.Conv2d(i, o, k, s, k // 2, groups=groups, bias=bias)


def _shuffle(x, g):
  n, c, h, w = x.shape
  return x.view(n, g, c // g, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


def _pool(x):
  return x.mean(dim=(2, 3))


# ----------------------------------------------------------------------------- ResNets


class Basic(nn.Module):
  expansion = 1

  def __init__(self, i, planes, stride, sc_name):
    super().__init__()
    self.conv1, self.bn1 = _conv(i, planes, 3, stride), nn.BatchNorm2d(planes)
    self.conv2, self.bn2 = _conv(planes, planes, 3), nn.BatchNorm2d(planes)
    self.sc_name = sc_name
    if stride != 1 or i != planes:
      setattr(self, sc_name, nn.Sequential(_conv(i, planes, 1, stride), nn.BatchNorm2d(planes)))

  def forward(self, x):
    out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    sc = getattr(self, self.sc_name, None)
    pre = out + (sc(x) if sc is not None else x)
    return F.relu(pre), pre


class Bottle(nn.Module):
  expansion = 4

  def __init__(self, i, planes, stride, sc_name):
    super().__init__()
    o = planes * 4
    self.conv1, self.bn1 = _conv(i, planes, 1), nn.BatchNorm2d(planes)
    self.conv2, self.bn2 = _conv(planes, planes, 3, stride), nn.BatchNorm2d(planes)
    self.conv3, self.bn3 = _conv(planes, o, 1), nn.BatchNorm2d(o)
    self.sc_name = sc_name
    if stride != 1 or i != o:
      setattr(self, sc_name, nn.Sequential(_conv(i, o, 1, stride), nn.BatchNorm2d(o)))

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    sc = getattr(self, self.sc_name, None)
    pre = out + (sc(x) if sc is not None else x)
    return F.relu(pre), pre


class ResNet(nn.Module):
  """RD resnet (downsample/fc), RD resnetv2 (shortcut/linear), torchvision (7x7 stem)."""

  def __init__(self, block, sizes, widths, num_classes, in_ch=3, imagenet=False,
               sc_name='downsample', head='fc'):
    super().__init__()
    self.imagenet, self.head_name = imagenet, head
    self.conv1 = _conv(in_ch, widths[0], 7 if imagenet else 3, 2 if imagenet else 1)
    self.bn1 = nn.BatchNorm2d(widths[0])
    c = widths[0]
    self.n_stages = len(sizes)
    for k, n in enumerate(sizes):
      blocks = []
      for i in range(n):
        blocks.append(block(c, widths[k + 1], 2 if (k > 0 and i == 0) else 1, sc_name))
        c = widths[k + 1] * block.expansion
      setattr(self, f'layer{k + 1}', nn.Sequential(*blocks))
    setattr(self, head, nn.Linear(c, num_classes))

  def forward(self, x):
    f = {}
    x = f['stem'] = F.relu(self.bn1(self.conv1(x)))
    if self.imagenet:
      x = F.max_pool2d(x, 3, 2, 1)
    for k in range(self.n_stages):
      for blk in getattr(self, f'layer{k + 1}'):
        x, pre = blk(x)
      f[f'stage{k + 1}'], f[f'stage{k + 1}_preact'] = x, pre
    f['last_map'] = x
    f['pooled'] = _pool(x)
    f['logits'] = getattr(self, self.head_name)(f['pooled'])
    return f['logits'], f


# ----------------------------------------------------------------------------- WRN


class WideBlock(nn.Module):

  def __init__(self, i, o, stride):
    super().__init__()
    self.bn1, self.conv1 = nn.BatchNorm2d(i), _conv(i, o, 3, stride)
    self.bn2, self.conv2 = nn.BatchNorm2d(o), _conv(o, o, 3)
    self.equal = i == o
    self.convShortcut = None if self.equal else _conv(i, o, 1, stride)  # pylint: disable=invalid-name

  def forward(self, x):
    o = F.relu(self.bn1(x))
    out = self.conv2(F.relu(self.bn2(self.conv1(o))))
    return (x if self.equal else self.convShortcut(o)) + out


class NetworkBlock(nn.Module):

  def __init__(self, n, i, o, stride):
    super().__init__()
    self.layer = nn.Sequential(*[WideBlock(i if j == 0 else o, o, stride if j == 0 else 1)
                                 for j in range(n)])


class WRN(nn.Module):

  def __init__(self, depth, width, num_classes, in_ch=3):
    super().__init__()
    n, ch = (depth - 4) // 6, (16, 16 * width, 32 * width, 64 * width)
    self.conv1 = _conv(in_ch, 16, 3)
    self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
    self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
    self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
    self.bn1 = nn.BatchNorm2d(ch[3])
    self.fc = nn.Linear(ch[3], num_classes)

  def forward(self, x):
    f = {}
    x = f['stem'] = self.conv1(x)
    blocks = (self.block1, self.block2, self.block3)
    for g, b in enumerate(blocks):
      x = f[f'stage{g + 1}'] = b.layer(x)
    f['stage1_preact'] = self.block2.layer[0].bn1(f['stage1'])
    f['stage2_preact'] = self.block3.layer[0].bn1(f['stage2'])
    f['stage3_preact'] = self.bn1(x)
    x = f['last_map'] = F.relu(f['stage3_preact'])
    f['pooled'] = _pool(x)
    f['logits'] = self.fc(f['pooled'])
    return f['logits'], f


# ----------------------------------------------------------------------------- VGG

VGG_CFG = {'vgg8': [[64], [128], [256], [512], [512]],
           'vgg11': [[64], [128], [256, 256], [512, 512], [512, 512]],
           'vgg13': [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]}


class VGG(nn.Module):

  def __init__(self, cfg, num_classes, in_ch=3):
    super().__init__()
    c = in_ch
    for b, widths in enumerate(cfg):
      layers = []
      for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        c = w
      setattr(self, f'block{b}', nn.Sequential(*layers[:-1]))
    self.classifier = nn.Linear(512, num_classes)

  def forward(self, x):
    h, f = x.shape[2], {}
    x = f['stem'] = F.relu(self.block0(x))
    x = F.max_pool2d(x, 2, 2)
    for b in range(1, 5):
      x = f[f'stage{b}_preact'] = getattr(self, f'block{b}')(x)
      x = f[f'stage{b}'] = F.relu(x)
      if b < 3 or (b == 3 and h == 64):
        x = F.max_pool2d(x, 2, 2)
    f['last_map'] = x
    f['pooled'] = _pool(x)
    f['logits'] = self.classifier(f['pooled'])
    return f['logits'], f


# ----------------------------------------------------------------------------- MobileNets


def _conv_bn_relu(i, o, k, s):
  return nn.Sequential(_conv(i, o, k, s), nn.BatchNorm2d(o), nn.ReLU())


class InvRes(nn.Module):

  def __init__(self, i, o, stride, t):
    super().__init__()
    h = i * t
    self.res = stride == 1 and i == o
    self.conv = nn.Sequential(_conv(i, h, 1), nn.BatchNorm2d(h), nn.ReLU(),
                              _conv(h, h, 3, stride, groups=h), nn.BatchNorm2d(h), nn.ReLU(),
                              _conv(h, o, 1), nn.BatchNorm2d(o))

  def forward(self, x):
    return x + self.conv(x) if self.res else self.conv(x)


class MobileNetV2(nn.Module):
  """RD mobile_half (T = 6, width 0.5)."""

  def __init__(self, num_classes, in_ch=3, t=6, w=0.5):
    super().__init__()
    setting = [(1, 16, 1, 1), (t, 24, 2, 1), (t, 32, 3, 2), (t, 64, 4, 2), (t, 96, 3, 1),
               (t, 160, 3, 2), (t, 320, 1, 1)]
    c = int(32 * w)
    self.conv1 = _conv_bn_relu(in_ch, c, 3, 2)
    self.blocks = nn.ModuleList()
    for tt, ch, n, s in setting:
      o = int(ch * w)
      layers = []
      for j in range(n):
        layers.append(InvRes(c, o, s if j == 0 else 1, tt))
        c = o
      self.blocks.append(nn.Sequential(*layers))
    last = int(1280 * w) if w > 1.0 else 1280
    self.conv2 = _conv_bn_relu(c, last, 1, 1)
    self.classifier = nn.Sequential(nn.Linear(last, num_classes))

  def forward(self, x):
    f = {}
    x = f['stem'] = self.conv1(x)
    for g, blk in enumerate(self.blocks):
      x = blk(x)
      if g in (1, 2, 4, 6):
        k = (1, 2, 4, 6).index(g) + 1
        f[f'stage{k}'] = f[f'stage{k}_preact'] = x
    x = f['last_map'] = self.conv2(x)
    f['pooled'] = _pool(x)
    f['logits'] = self.classifier(f['pooled'])
    return f['logits'], f


class MobileNetV1(nn.Module):
  """mdistiller ImageNet MobileNetV1 (AvgPool(7) replaced by the mean)."""
  LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
            (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

  def __init__(self, num_classes, in_ch=3):
    super().__init__()
    mods, c = [_conv_bn_relu(in_ch, 32, 3, 2)], 32
    for o, s in self.LAYERS:
      mods.append(nn.Sequential(_conv(c, c, 3, s, groups=c), nn.BatchNorm2d(c), nn.ReLU(),
                                _conv(c, o, 1), nn.BatchNorm2d(o), nn.ReLU()))
      c = o
    self.model = nn.Sequential(*mods)
    self.fc = nn.Linear(1024, num_classes)

  def forward(self, x):
    f = {}
    x = f['stem'] = self.model[0](x)
    for i in range(1, 14):
      pre = self.model[i][:-1](x)
      x = F.relu(pre)
      if i in (3, 5, 11, 13):
        k = (3, 5, 11, 13).index(i) + 1
        f[f'stage{k}_preact'], f[f'stage{k}'] = pre, x
    f['last_map'] = x
    f['pooled'] = _pool(x)
    f['logits'] = self.fc(f['pooled'])
    return f['logits'], f


# ----------------------------------------------------------------------------- ShuffleNets


class ShuffleV1Unit(nn.Module):

  def __init__(self, i, o, stride, groups):
    super().__init__()
    mid, g = o // 4, (1 if i == 24 else groups)
    self.g, self.stride = g, stride
    self.conv1, self.bn1 = _conv(i, mid, 1, groups=g), nn.BatchNorm2d(mid)
    self.conv2, self.bn2 = _conv(mid, mid, 3, stride, groups=mid), nn.BatchNorm2d(mid)
    self.conv3, self.bn3 = _conv(mid, o, 1, groups=groups), nn.BatchNorm2d(o)

  def forward(self, x):
    out = _shuffle(F.relu(self.bn1(self.conv1(x))), self.g)
    out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
    if self.stride == 2:
      pre = torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1)
    else:
      pre = out + x
    return F.relu(pre), pre


class ShuffleNetV1(nn.Module):

  def __init__(self, num_classes, in_ch=3, out_planes=(240, 480, 960), sizes=(4, 8, 4), groups=3):
    super().__init__()
    self.conv1, self.bn1 = _conv(in_ch, 24, 1), nn.BatchNorm2d(24)
    c = 24
    for k, (o, n) in enumerate(zip(out_planes, sizes)):
      units = []
      for i in range(n):
        units.append(ShuffleV1Unit(c, o - c if i == 0 else o, 2 if i == 0 else 1, groups))
        c = o
      setattr(self, f'layer{k + 1}', nn.Sequential(*units))
    self.linear = nn.Linear(out_planes[-1], num_classes)

  def forward(self, x):
    f = {}
    x = f['stem'] = F.relu(self.bn1(self.conv1(x)))
    for k in range(3):
      for u in getattr(self, f'layer{k + 1}'):
        x, pre = u(x)
      f[f'stage{k + 1}'], f[f'stage{k + 1}_preact'] = x, pre
    f['last_map'] = x
    f['pooled'] = _pool(x)
    f['logits'] = self.linear(f['pooled'])
    return f['logits'], f


class ShuffleV2Down(nn.Module):

  def __init__(self, i, o):
    super().__init__()
    mid = o // 2
    self.conv1, self.bn1 = _conv(i, i, 3, 2, groups=i), nn.BatchNorm2d(i)
    self.conv2, self.bn2 = _conv(i, mid, 1), nn.BatchNorm2d(mid)
    self.conv3, self.bn3 = _conv(i, mid, 1), nn.BatchNorm2d(mid)
    self.conv4, self.bn4 = _conv(mid, mid, 3, 2, groups=mid), nn.BatchNorm2d(mid)
    self.conv5, self.bn5 = _conv(mid, mid, 1), nn.BatchNorm2d(mid)

  def forward(self, x):
    left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
    right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
    right = F.relu(self.bn5(self.conv5(right)))
    return _shuffle(torch.cat([left, right], 1), 2), None


class ShuffleV2Unit(nn.Module):

  def __init__(self, c):
    super().__init__()
    c = c // 2
    self.conv1, self.bn1 = _conv(c, c, 1), nn.BatchNorm2d(c)
    self.conv2, self.bn2 = _conv(c, c, 3, groups=c), nn.BatchNorm2d(c)
    self.conv3, self.bn3 = _conv(c, c, 1), nn.BatchNorm2d(c)

  def forward(self, x):
    c = x.shape[1] // 2
    x1, x2 = x[:, :c], x[:, c:]
    out = F.relu(self.bn1(self.conv1(x2)))
    pre = self.bn3(self.conv3(self.bn2(self.conv2(out))))
    return _shuffle(torch.cat([x1, F.relu(pre)], 1), 2), torch.cat([x1, pre], 1)


class ShuffleNetV2(nn.Module):

  def __init__(self, num_classes, in_ch=3, out=(116, 232, 464, 1024), sizes=(3, 7, 3)):
    super().__init__()
    self.conv1, self.bn1 = _conv(in_ch, 24, 1), nn.BatchNorm2d(24)
    c = 24
    for k, n in enumerate(sizes):
      setattr(self, f'layer{k + 1}',
              nn.Sequential(ShuffleV2Down(c, out[k]), *[ShuffleV2Unit(out[k]) for _ in range(n)]))
      c = out[k]
    self.conv2, self.bn2 = _conv(c, out[3], 1), nn.BatchNorm2d(out[3])
    self.linear = nn.Linear(out[3], num_classes)

  def forward(self, x):
    f = {}
    x = f['stem'] = F.relu(self.bn1(self.conv1(x)))
    for k in range(3):
      for u in getattr(self, f'layer{k + 1}'):
        x, pre = u(x)
      f[f'stage{k + 1}'], f[f'stage{k + 1}_preact'] = x, pre
    x = f['last_map'] = F.relu(self.bn2(self.conv2(x)))
    f['pooled'] = _pool(x)
    f['logits'] = self.linear(f['pooled'])
    return f['logits'], f


# ----------------------------------------------------------------------------- registry

_V2 = {18: (Basic, (2, 2, 2, 2)), 34: (Basic, (3, 4, 6, 3)), 50: (Bottle, (3, 4, 6, 3))}


def build(arch: str, num_classes: int, in_ch: int = 3) -> nn.Module:
  """The reference PyTorch net for a kdjax architecture name."""
  m = re.fullmatch(r'resnet(\d+)(_cifar)?', arch)
  if m and int(m[1]) in _V2 and (m[2] or arch in ('resnet18', 'resnet34', 'resnet50')):
    block, sizes = _V2[int(m[1])]
    w = (64, 64, 128, 256, 512)
    if m[2]:
      return ResNet(block, sizes, w, num_classes, in_ch, sc_name='shortcut', head='linear')
    return ResNet(block, sizes, w, num_classes, in_ch, imagenet=True)
  m = re.fullmatch(r'resnet(\d+)(x4)?', arch)
  if m:
    n = (int(m[1]) - 2) // 6
    w = (32, 64, 128, 256) if m[2] else (16, 16, 32, 64)
    return ResNet(Basic, (n, n, n), w, num_classes, in_ch)
  m = re.fullmatch(r'wrn_(\d+)_(\d+)', arch)
  if m:
    return WRN(int(m[1]), int(m[2]), num_classes, in_ch)
  if arch in VGG_CFG:
    return VGG(VGG_CFG[arch], num_classes, in_ch)
  table = {'mobilenetv2': MobileNetV2, 'mobilenetv1': MobileNetV1, 'shufflenetv1': ShuffleNetV1,
           'shufflenetv2': ShuffleNetV2}
  return table[arch](num_classes, in_ch)


def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights AND random BN statistics (running mean off zero, variance off one); eval mode."""
  g = torch.Generator().manual_seed(seed)
  rand = lambda t, scale, shift=0.0: t.copy_(shift + scale * torch.randn(t.shape, generator=g))  # noqa: E731
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, nn.BatchNorm2d):
        rand(m.weight, 0.2, 1.0)
        rand(m.bias, 0.2)
        rand(m.running_mean, 0.2)
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
      elif isinstance(m, (nn.Conv2d, nn.Linear)):
        rand(m.weight, (2.0 / m.weight[0].numel()) ** 0.5)
        if m.bias is not None:
          rand(m.bias, 0.1)
  return net.eval()
