"""Hinton KD wrn_40_2 -> wrn_16_2 on cifar10 (seed 003 recipe, KD alpha 0.9, tau 4).

  kdjax train --config configs/cifar10/teacher_wrn_40_2.py --workdir runs/cifar10/teacher_wrn_40_2
  kdjax train --config configs/cifar10/kd_wrn_40_2_wrn_16_2.py --workdir runs/cifar10/kd_wrn_40_2_wrn_16_2
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.student('cifar10', 'wrn_40_2', 'wrn_16_2', recipes.kd_terms(weight=0.9, temperature=4.0),
                         ce_weight=0.1)
