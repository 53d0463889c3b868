"""CRD+KD (RD: CE + 1.0 KD (tau 4) + 0.8 CRD): wrn_40_2 -> wrn_16_2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_wrn_40_2.py --workdir runs/cifar100/teacher_wrn_40_2
  kdjax train --config configs/cifar100/crd_kd_wrn_40_2_wrn_16_2.py --workdir runs/cifar100/crd_kd_wrn_40_2_wrn_16_2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('crd_kd', 'wrn_40_2', 'wrn_16_2')
