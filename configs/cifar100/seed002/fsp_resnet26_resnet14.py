"""Seed 002 Table IV (CIFAR-100), column ResNet-14, row FSP: resnet26 -> resnet14.

FSP, two stages: (1) "fsp_init": 100 epochs, lr 0.001 x0.1 at 60/80, FSP on blocks
1-3 with W = [1, 3, 1], student without its classifier (init stage from
kdjax.rd_table); (2) 200 epochs of Hinton KD (alpha 0.9, tau 4). Total 300 epochs.

  kdjax train --config configs/cifar100/seed002/teacher_resnet26.py --workdir runs/cifar100/seed002/teacher_resnet26
  kdjax train --config configs/cifar100/seed002/fsp_resnet26_resnet14.py --workdir runs/cifar100/seed002/fsp_resnet26_resnet14

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar100/seed002/fsp_resnet26_resnet14_s<s>.
The teacher is the best of its five seeds; place (or link) it at the workdir
above, or pass --config.teacher.checkpoint=DIR.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar100', 'fsp', 'resnet14')
