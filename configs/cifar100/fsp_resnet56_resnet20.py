"""FSP (RD: 30-epoch FSP init stage at lr 0.05, then CE only; needs equal channel counts): resnet56 -> resnet20 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet56.py --workdir runs/cifar100/teacher_resnet56
  kdjax train --config configs/cifar100/fsp_resnet56_resnet20.py --workdir runs/cifar100/fsp_resnet56_resnet20
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('fsp', 'resnet56', 'resnet20')
