"""activation boundaries (RD: 30-epoch AB init stage, then CE only): resnet110 -> resnet32 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet110.py --workdir runs/cifar100/teacher_resnet110
  kdjax train --config configs/cifar100/ab_resnet110_resnet32.py --workdir runs/cifar100/ab_resnet110_resnet32
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('ab', 'resnet110', 'resnet32')
