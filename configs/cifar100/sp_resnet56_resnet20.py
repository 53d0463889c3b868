"""similarity-preserving KD (RD: CE + 3000 SP on the last stage): resnet56 -> resnet20 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet56.py --workdir runs/cifar100/teacher_resnet56
  kdjax train --config configs/cifar100/sp_resnet56_resnet20.py --workdir runs/cifar100/sp_resnet56_resnet20
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('sp', 'resnet56', 'resnet20')
