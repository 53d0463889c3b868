"""Seed 002 Table III (CIFAR-10), column ResNet-26: train resnet26 from scratch.

This is the Baseline row for ResNet-26 and the teacher of the ResNet students (Table II: the best of five seeds).
Zagoruyko recipe: reflect-pad-4 crop + flip, SGD 0.9, 200 epochs, batch 128,
lr 0.1 x0.2 at 60/120/150, wd 5e-4.

  kdjax train --config configs/cifar10/seed002/teacher_resnet26.py --workdir runs/cifar10/seed002/teacher_resnet26

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar10/seed002/teacher_resnet26_s<s>.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar10', 'baseline', 'resnet26')
