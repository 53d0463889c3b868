"""FSP (RD: 30-epoch FSP init stage at lr 0.05, then CE only; needs equal channel counts): resnet32x4 -> shufflenetv1 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet32x4.py --workdir runs/cifar100/teacher_resnet32x4
  kdjax train --config configs/cifar100/fsp_resnet32x4_shufflenetv1.py --workdir runs/cifar100/fsp_resnet32x4_shufflenetv1
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('fsp', 'resnet32x4', 'shufflenetv1')
