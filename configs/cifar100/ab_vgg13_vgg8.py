"""activation boundaries (RD: 30-epoch AB init stage, then CE only): vgg13 -> vgg8 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_vgg13.py --workdir runs/cifar100/teacher_vgg13
  kdjax train --config configs/cifar100/ab_vgg13_vgg8.py --workdir runs/cifar100/ab_vgg13_vgg8
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('ab', 'vgg13', 'vgg8')
