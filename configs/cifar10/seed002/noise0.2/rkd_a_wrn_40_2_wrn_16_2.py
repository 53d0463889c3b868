"""Seed 002 Table V (CIFAR-10, label noise sigma=0.2), column WRN-16-2, row RKD-A: wrn_40_2 -> wrn_16_2.

RKD-A: CE + 50 * RKD angle loss on the pooled block-3 output.

  kdjax train --config configs/cifar10/seed002/noise0.2/teacher_wrn_40_2.py --workdir runs/cifar10/seed002/noise0.2/teacher_wrn_40_2
  kdjax train --config configs/cifar10/seed002/noise0.2/rkd_a_wrn_40_2_wrn_16_2.py --workdir runs/cifar10/seed002/noise0.2/rkd_a_wrn_40_2_wrn_16_2

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar10/seed002/noise0.2/rkd_a_wrn_40_2_wrn_16_2_s<s>.
The teacher is the best of its five seeds; place (or link) it at the workdir
above, or pass --config.teacher.checkpoint=DIR.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar10', 'rkd_a', 'wrn_16_2', noise=0.2)
