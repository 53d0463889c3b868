"""CRD+KD (RD: CE + 1.0 KD (tau 4) + 0.8 CRD): vgg13 -> mobilenetv2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_vgg13.py --workdir runs/cifar100/teacher_vgg13
  kdjax train --config configs/cifar100/crd_kd_vgg13_mobilenetv2.py --workdir runs/cifar100/crd_kd_vgg13_mobilenetv2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('crd_kd', 'vgg13', 'mobilenetv2')
