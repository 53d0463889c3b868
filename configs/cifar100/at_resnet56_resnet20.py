"""attention transfer (RD: CE + 1000 AT on the stage outputs): resnet56 -> resnet20 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet56.py --workdir runs/cifar100/teacher_resnet56
  kdjax train --config configs/cifar100/at_resnet56_resnet20.py --workdir runs/cifar100/at_resnet56_resnet20
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('at', 'resnet56', 'resnet20')
