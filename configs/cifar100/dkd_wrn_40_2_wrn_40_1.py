"""decoupled KD (CE + DKD, alpha 1, beta per pair as mdistiller, tau 4, 20-epoch warm-up): wrn_40_2 -> wrn_40_1 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_wrn_40_2.py --workdir runs/cifar100/teacher_wrn_40_2
  kdjax train --config configs/cifar100/dkd_wrn_40_2_wrn_40_1.py --workdir runs/cifar100/dkd_wrn_40_2_wrn_40_1
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('dkd', 'wrn_40_2', 'wrn_40_1')
