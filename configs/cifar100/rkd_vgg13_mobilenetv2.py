"""relational KD (RD: CE + 25 distance + 50 angle on the pooled vector): vgg13 -> mobilenetv2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_vgg13.py --workdir runs/cifar100/teacher_vgg13
  kdjax train --config configs/cifar100/rkd_vgg13_mobilenetv2.py --workdir runs/cifar100/rkd_vgg13_mobilenetv2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('rkd', 'vgg13', 'mobilenetv2')
