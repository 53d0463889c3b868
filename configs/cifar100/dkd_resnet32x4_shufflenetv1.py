"""decoupled KD (CE + DKD, alpha 1, beta per pair as mdistiller, tau 4, 20-epoch warm-up): resnet32x4 -> shufflenetv1 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet32x4.py --workdir runs/cifar100/teacher_resnet32x4
  kdjax train --config configs/cifar100/dkd_resnet32x4_shufflenetv1.py --workdir runs/cifar100/dkd_resnet32x4_shufflenetv1
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('dkd', 'resnet32x4', 'shufflenetv1')
