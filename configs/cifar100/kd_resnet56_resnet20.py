"""Hinton KD resnet56 -> resnet20 on cifar100 (RepDistiller/CRD table: 0.1 CE + 0.9 KD, tau 4, 240 epochs).

  kdjax train --config configs/cifar100/teacher_resnet56.py --workdir runs/cifar100/teacher_resnet56
  kdjax train --config configs/cifar100/kd_resnet56_resnet20.py --workdir runs/cifar100/kd_resnet56_resnet20
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.student('cifar100', 'resnet56', 'resnet20', recipes.kd_terms(weight=0.9, temperature=4.0),
                         ce_weight=0.1)
