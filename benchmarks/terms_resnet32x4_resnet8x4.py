"""KD + AT + SP + RKD on CIFAR-100 resnet32x4 -> resnet8x4, for `kdjax bench --per_term`.

  kdjax bench --config benchmarks/terms_resnet32x4_resnet8x4.py --per_term --steps 20
"""

from configs import common as recipes


def get_config(arg=None):
  del arg
  return recipes.student('cifar100', 'resnet32x4', 'resnet8x4', {
      'kd': dict(method='kd', weight=0.9, temperature=4.0),
      'at': dict(method='at', weight=1000.0),
      'sp': dict(method='sp', weight=3000.0),
      'rkd': dict(method='rkd', weight=1.0),
  }, ce_weight=0.1)
