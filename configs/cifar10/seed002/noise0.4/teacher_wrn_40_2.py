"""Seed 002 Table V (CIFAR-10, label noise sigma=0.4), column WRN-40-2: train wrn_40_2 from scratch.

This is the Baseline row for WRN-40-2 and the teacher of the WRN students (Table II: the best of five seeds).
Zagoruyko recipe: reflect-pad-4 crop + flip, SGD 0.9, 200 epochs, batch 128,
lr 0.1 x0.2 at 60/120/150, wd 5e-4.

  kdjax train --config configs/cifar10/seed002/noise0.4/teacher_wrn_40_2.py --workdir runs/cifar10/seed002/noise0.4/teacher_wrn_40_2

Five seeds as in the paper: add --config.seed=<s> and use --workdir runs/cifar10/seed002/noise0.4/teacher_wrn_40_2_s<s>.
"""

from kdjax import seed002


def get_config(arg=None):
  del arg
  return seed002.config('cifar10', 'baseline', 'wrn_40_2', noise=0.4)
