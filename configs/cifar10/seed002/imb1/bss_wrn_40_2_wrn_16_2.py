"""Seed 002 Table VI (CIFAR-10, class imbalance gamma=1), column WRN-16-2, row BSS: wrn_40_2 -> wrn_16_2.

BSS: CE + r(e) L_soft(x) + r_a(e) L_soft(x_adv), tau 4, attack size 32, 10 steps of 0.3
(L2, clamp 2.5; "max eps 16" is unused by the official attack). Base samples correct for
teacher and student (paper); bss base='teacher' gives the official code's rule.

  kdjax train --config configs/cifar10/seed002/imb1/teacher_wrn_40_2.py --workdir runs/cifar10/seed002/imb1/teacher_wrn_40_2
  kdjax train --config configs/cifar10/seed002/imb1/bss_wrn_40_2_wrn_16_2.py --workdir runs/cifar10/seed002/imb1/bss_wrn_40_2_wrn_16_2

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar10/seed002/imb1/bss_wrn_40_2_wrn_16_2_s<s>.
The teacher is the best of its five seeds; place (or link) it at the workdir
above, or pass --config.teacher.checkpoint=DIR.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar10', 'bss', 'wrn_16_2', imbalance=1.0)
