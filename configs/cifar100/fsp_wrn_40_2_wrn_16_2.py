"""FSP (RD: 30-epoch FSP init stage at lr 0.05, then CE only; needs equal channel counts): wrn_40_2 -> wrn_16_2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_wrn_40_2.py --workdir runs/cifar100/teacher_wrn_40_2
  kdjax train --config configs/cifar100/fsp_wrn_40_2_wrn_16_2.py --workdir runs/cifar100/fsp_wrn_40_2_wrn_16_2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('fsp', 'wrn_40_2', 'wrn_16_2')
