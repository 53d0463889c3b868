"""Seed 002 Table III (CIFAR-10), column WRN-16-2: train wrn_16_2 from scratch.

This is the Baseline row for WRN-16-2.
Zagoruyko recipe: reflect-pad-4 crop + flip, SGD 0.9, 200 epochs, batch 128,
lr 0.1 x0.2 at 60/120/150, wd 5e-4.

  kdjax train --config configs/cifar10/seed002/teacher_wrn_16_2.py --workdir runs/cifar10/seed002/teacher_wrn_16_2

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar10/seed002/teacher_wrn_16_2_s<s>.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar10', 'baseline', 'wrn_16_2')
