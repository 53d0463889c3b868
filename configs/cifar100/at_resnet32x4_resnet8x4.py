"""attention transfer (RD: CE + 1000 AT on the stage outputs): resnet32x4 -> resnet8x4 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet32x4.py --workdir runs/cifar100/teacher_resnet32x4
  kdjax train --config configs/cifar100/at_resnet32x4_resnet8x4.py --workdir runs/cifar100/at_resnet32x4_resnet8x4
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('at', 'resnet32x4', 'resnet8x4')
