"""Seed 002 Table VI (CIFAR-10, class imbalance gamma=0.2), column WRN-16-2, row Hinton: wrn_40_2 -> wrn_16_2.

Hinton KD: 0.1 CE + 0.9 tau^2 KL, tau 4.

  kdjax train --config configs/cifar10/seed002/imb0.2/teacher_wrn_40_2.py --workdir runs/cifar10/seed002/imb0.2/teacher_wrn_40_2
  kdjax train --config configs/cifar10/seed002/imb0.2/kd_wrn_40_2_wrn_16_2.py --workdir runs/cifar10/seed002/imb0.2/kd_wrn_40_2_wrn_16_2

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar10/seed002/imb0.2/kd_wrn_40_2_wrn_16_2_s<s>.
The teacher is the best of its five seeds; place (or link) it at the workdir
above, or pass --config.teacher.checkpoint=DIR.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar10', 'kd', 'wrn_16_2', imbalance=0.2)
