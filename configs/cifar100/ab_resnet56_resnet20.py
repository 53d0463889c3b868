"""activation boundaries (RD: 30-epoch AB init stage, then CE only): resnet56 -> resnet20 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet56.py --workdir runs/cifar100/teacher_resnet56
  kdjax train --config configs/cifar100/ab_resnet56_resnet20.py --workdir runs/cifar100/ab_resnet56_resnet20
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('ab', 'resnet56', 'resnet20')
