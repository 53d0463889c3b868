"""attention transfer (RD: CE + 1000 AT on the stage outputs): vgg13 -> vgg8 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_vgg13.py --workdir runs/cifar100/teacher_vgg13
  kdjax train --config configs/cifar100/at_vgg13_vgg8.py --workdir runs/cifar100/at_vgg13_vgg8
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('at', 'vgg13', 'vgg8')
