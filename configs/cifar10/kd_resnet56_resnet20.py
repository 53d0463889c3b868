"""Hinton KD resnet56 -> resnet20 on cifar10 (seed 003 recipe, KD alpha 0.9, tau 4).

  kdjax train --config configs/cifar10/teacher_resnet56.py --workdir runs/cifar10/teacher_resnet56
  kdjax train --config configs/cifar10/kd_resnet56_resnet20.py --workdir runs/cifar10/kd_resnet56_resnet20
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.student('cifar10', 'resnet56', 'resnet20', recipes.kd_terms(weight=0.9, temperature=4.0),
                         ce_weight=0.1)
