"""Seed 002 Table III (CIFAR-10), column ResNet-8, row RKD-D: resnet26 -> resnet8.

RKD-D: CE + 25 * RKD distance loss on the pooled block-3 output.

  kdjax train --config configs/cifar10/seed002/teacher_resnet26.py --workdir runs/cifar10/seed002/teacher_resnet26
  kdjax train --config configs/cifar10/seed002/rkd_d_resnet26_resnet8.py --workdir runs/cifar10/seed002/rkd_d_resnet26_resnet8

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar10/seed002/rkd_d_resnet26_resnet8_s<s>.
The teacher is the best of its five seeds; place (or link) it at the workdir
above, or pass --config.teacher.checkpoint=DIR.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar10', 'rkd_d', 'resnet8')
