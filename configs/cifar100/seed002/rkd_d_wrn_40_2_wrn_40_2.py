"""Seed 002 Table IV (CIFAR-100), column WRN-40-2, row RKD-D: wrn_40_2 -> wrn_40_2.

RKD-D: CE + 25 * RKD distance loss on the pooled block-3 output.

  kdjax train --config configs/cifar100/seed002/teacher_wrn_40_2.py --workdir runs/cifar100/seed002/teacher_wrn_40_2
  kdjax train --config configs/cifar100/seed002/rkd_d_wrn_40_2_wrn_40_2.py --workdir runs/cifar100/seed002/rkd_d_wrn_40_2_wrn_40_2

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar100/seed002/rkd_d_wrn_40_2_wrn_40_2_s<s>.
The teacher is the best of its five seeds; place (or link) it at the workdir
above, or pass --config.teacher.checkpoint=DIR.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar100', 'rkd_d', 'wrn_40_2')
