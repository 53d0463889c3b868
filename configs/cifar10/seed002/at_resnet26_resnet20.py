"""Seed 002 Table III (CIFAR-10), column ResNet-20, row AT: resnet26 -> resnet20.

AT: CE + 1000 * attention loss on the outputs of blocks 1, 2, 3.

  kdjax train --config configs/cifar10/seed002/teacher_resnet26.py --workdir runs/cifar10/seed002/teacher_resnet26
  kdjax train --config configs/cifar10/seed002/at_resnet26_resnet20.py --workdir runs/cifar10/seed002/at_resnet26_resnet20

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar10/seed002/at_resnet26_resnet20_s<s>.
The teacher is the best of its five seeds; place (or link) it at the workdir
above, or pass --config.teacher.checkpoint=DIR.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar10', 'at', 'resnet20')
