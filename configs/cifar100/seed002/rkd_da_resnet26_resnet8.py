"""Seed 002 Table IV (CIFAR-100), column ResNet-8, row RKD-DA: resnet26 -> resnet8.

RKD-DA: CE + 25 * distance + 50 * angle on the pooled block-3 output.

  kdjax train --config configs/cifar100/seed002/teacher_resnet26.py --workdir runs/cifar100/seed002/teacher_resnet26
  kdjax train --config configs/cifar100/seed002/rkd_da_resnet26_resnet8.py --workdir runs/cifar100/seed002/rkd_da_resnet26_resnet8

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar100/seed002/rkd_da_resnet26_resnet8_s<s>.
The teacher is the best of its five seeds; place (or link) it at the workdir
above, or pass --config.teacher.checkpoint=DIR.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar100', 'rkd_da', 'resnet8')
