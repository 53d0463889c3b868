"""decoupled KD (CE + DKD, alpha 1, beta per pair as mdistiller, tau 4, 20-epoch warm-up): resnet110 -> resnet20 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet110.py --workdir runs/cifar100/teacher_resnet110
  kdjax train --config configs/cifar100/dkd_resnet110_resnet20.py --workdir runs/cifar100/dkd_resnet110_resnet20
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('dkd', 'resnet110', 'resnet20')
