"""relational KD (RD: CE + 25 distance + 50 angle on the pooled vector): resnet32x4 -> shufflenetv2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet32x4.py --workdir runs/cifar100/teacher_resnet32x4
  kdjax train --config configs/cifar100/rkd_resnet32x4_shufflenetv2.py --workdir runs/cifar100/rkd_resnet32x4_shufflenetv2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('rkd', 'resnet32x4', 'shufflenetv2')
