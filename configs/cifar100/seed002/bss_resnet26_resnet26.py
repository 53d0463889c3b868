"""Seed 002 Table IV (CIFAR-100), column ResNet-26, row BSS: resnet26 -> resnet26.

BSS: CE + r(e) L_soft(x) + r_a(e) L_soft(x_adv), tau 4, attack size 32, 10 steps of 0.3
(L2, clamp 2.5; "max eps 16" is unused by the official attack). Base samples correct for
teacher and student (paper); bss base='teacher' gives the official code's rule.

  kdjax train --config configs/cifar100/seed002/teacher_resnet26.py --workdir runs/cifar100/seed002/teacher_resnet26
  kdjax train --config configs/cifar100/seed002/bss_resnet26_resnet26.py --workdir runs/cifar100/seed002/bss_resnet26_resnet26

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar100/seed002/bss_resnet26_resnet26_s<s>.
The teacher is the best of its five seeds; place (or link) it at the workdir
above, or pass --config.teacher.checkpoint=DIR.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar100', 'bss', 'resnet26')
