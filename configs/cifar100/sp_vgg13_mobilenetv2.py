"""similarity-preserving KD (RD: CE + 3000 SP on the last stage): vgg13 -> mobilenetv2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_vgg13.py --workdir runs/cifar100/teacher_vgg13
  kdjax train --config configs/cifar100/sp_vgg13_mobilenetv2.py --workdir runs/cifar100/sp_vgg13_mobilenetv2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('sp', 'vgg13', 'mobilenetv2')
