"""Hinton KD wrn_40_2 -> wrn_40_1 on cifar100 (RepDistiller/CRD table: 0.1 CE + 0.9 KD, tau 4, 240 epochs).

  kdjax train --config configs/cifar100/teacher_wrn_40_2.py --workdir runs/cifar100/teacher_wrn_40_2
  kdjax train --config configs/cifar100/kd_wrn_40_2_wrn_40_1.py --workdir runs/cifar100/kd_wrn_40_2_wrn_40_1
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.student('cifar100', 'wrn_40_2', 'wrn_40_1', recipes.kd_terms(weight=0.9, temperature=4.0),
                         ce_weight=0.1)
