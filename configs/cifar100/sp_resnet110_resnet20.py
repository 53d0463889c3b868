"""similarity-preserving KD (RD: CE + 3000 SP on the last stage): resnet110 -> resnet20 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet110.py --workdir runs/cifar100/teacher_resnet110
  kdjax train --config configs/cifar100/sp_resnet110_resnet20.py --workdir runs/cifar100/sp_resnet110_resnet20
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('sp', 'resnet110', 'resnet20')
