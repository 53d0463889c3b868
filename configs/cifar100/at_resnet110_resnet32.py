"""attention transfer (RD: CE + 1000 AT on the stage outputs): resnet110 -> resnet32 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet110.py --workdir runs/cifar100/teacher_resnet110
  kdjax train --config configs/cifar100/at_resnet110_resnet32.py --workdir runs/cifar100/at_resnet110_resnet32
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('at', 'resnet110', 'resnet32')
