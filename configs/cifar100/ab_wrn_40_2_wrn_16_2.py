"""activation boundaries (RD: 30-epoch AB init stage, then CE only): wrn_40_2 -> wrn_16_2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_wrn_40_2.py --workdir runs/cifar100/teacher_wrn_40_2
  kdjax train --config configs/cifar100/ab_wrn_40_2_wrn_16_2.py --workdir runs/cifar100/ab_wrn_40_2_wrn_16_2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('ab', 'wrn_40_2', 'wrn_16_2')
