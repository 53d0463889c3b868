"""Seed 002 Table IV (CIFAR-100), column ResNet-14, row Hinton: resnet26 -> resnet14.

Hinton KD: 0.1 CE + 0.9 tau^2 KL, tau 4.

  kdjax train --config configs/cifar100/seed002/teacher_resnet26.py --workdir runs/cifar100/seed002/teacher_resnet26
  kdjax train --config configs/cifar100/seed002/kd_resnet26_resnet14.py --workdir runs/cifar100/seed002/kd_resnet26_resnet14

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar100/seed002/kd_resnet26_resnet14_s<s>.
The teacher is the best of its five seeds; place (or link) it at the workdir
above, or pass --config.teacher.checkpoint=DIR.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar100', 'kd', 'resnet14')
