"""overhaul of feature distillation (official weight: CE + 1e-3 OFD / N on pre-ReLU maps): resnet110 -> resnet20 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet110.py --workdir runs/cifar100/teacher_resnet110
  kdjax train --config configs/cifar100/ofd_resnet110_resnet20.py --workdir runs/cifar100/ofd_resnet110_resnet20
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('ofd', 'resnet110', 'resnet20')
