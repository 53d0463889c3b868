"""Worst relative error of kdjax vs. the PyTorch reference nets, per architecture.

  PYTHONPATH=. python benchmarks/torch_parity.py [arch ...]

For each architecture: the reference PyTorch net of tests/torch_refs with random
weights and random BN statistics (eval mode), imported with `kdjax.interop`, both
run on the same random batch (2 images; 32x32 CIFAR nets, 64x64 ImageNet nets).
Error = max |torch - kdjax| / max |torch|, over the logits and over every shared
feature; `roundtrip` says whether exporting back reproduces every tensor exactly.
Needs torch (the test extra).
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests'))

from kdjax import models  # noqa: E402
from kdjax.interop import torch_io  # noqa: E402
from torch_refs import build, randomize  # noqa: E402

ARCHS = ('resnet8', 'resnet14', 'resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110',
         'resnet8x4', 'resnet32x4', 'wrn_16_1', 'wrn_16_2', 'wrn_40_1', 'wrn_40_2', 'vgg8', 'vgg11',
         'vgg13', 'mobilenetv2', 'shufflenetv1', 'shufflenetv2', 'resnet18_cifar', 'resnet34_cifar',
         'resnet50_cifar', 'resnet18', 'resnet34', 'resnet50', 'mobilenetv1')
IMAGENET = ('resnet18', 'resnet34', 'resnet50', 'mobilenetv1')


def measure(arch, num_classes=100, seed=0):
  hw = 64 if arch in IMAGENET else 32
  net = randomize(build(arch, num_classes), seed)
  sd = net.state_dict()
  variables = torch_io.to_variables(arch, torch_io.unwrap(sd), num_classes, (hw, hw, 3))
  x = np.random.RandomState(seed).randn(2, hw, hw, 3).astype(np.float32)
  with torch.no_grad():
    _, tf = net(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  _, jf = models.create(arch, num_classes).apply(variables, x, train=False)
  errs = {}
  for k, t in tf.items():
    a = t.numpy()
    a = a.transpose(0, 2, 3, 1) if a.ndim == 4 else a
    errs[k] = float(np.abs(a - np.asarray(jf[k])).max() / np.abs(a).max())
  back = torch_io.to_state_dict(arch, variables)
  exact = set(back) == set(sd) and all(np.array_equal(back[k], v.numpy()) for k, v in sd.items()
                                       if not k.endswith('num_batches_tracked'))
  return errs, exact, len(sd)


def main(archs):
  print('| arch | state_dict entries | logits rel. err | worst feature (rel. err) | export round trip |')
  print('|---|---|---|---|---|')
  for arch in archs:
    errs, exact, n = measure(arch)
    worst = max((k for k in errs if k != 'logits'), key=errs.get)
    print(f'| {arch} | {n} | {errs["logits"]:.1e} | {worst} ({errs[worst]:.1e}) | '
          f'{"exact" if exact else "DIFFERS"} |', flush=True)


if __name__ == '__main__':
  main(sys.argv[1:] or ARCHS)
