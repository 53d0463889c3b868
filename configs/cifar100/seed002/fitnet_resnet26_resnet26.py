"""Seed 002 Table IV (CIFAR-100), column ResNet-26, row FitNet: resnet26 -> resnet26.

FitNet, two stages: (1) "hint": 100 epochs, lr 0.001 x0.1 at 60/80, hint loss at
block 2 only (W = [0, 1, 0]) training the student up to block 2 + the regressor
(init stage from kdjax.rd_table); (2) 200 epochs of Hinton KD (alpha 0.9, tau 4).
Total 300 epochs.

  kdjax train --config configs/cifar100/seed002/teacher_resnet26.py --workdir runs/cifar100/seed002/teacher_resnet26
  kdjax train --config configs/cifar100/seed002/fitnet_resnet26_resnet26.py --workdir runs/cifar100/seed002/fitnet_resnet26_resnet26

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar100/seed002/fitnet_resnet26_resnet26_s<s>.
The teacher is the best of its five seeds; place (or link) it at the workdir
above, or pass --config.teacher.checkpoint=DIR.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar100', 'fitnet', 'resnet26')
