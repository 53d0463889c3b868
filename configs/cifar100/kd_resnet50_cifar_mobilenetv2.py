"""Hinton KD resnet50_cifar -> mobilenetv2 on cifar100 (RepDistiller/CRD table: 0.1 CE + 0.9 KD, tau 4, 240 epochs).

  kdjax train --config configs/cifar100/teacher_resnet50_cifar.py --workdir runs/cifar100/teacher_resnet50_cifar
  kdjax train --config configs/cifar100/kd_resnet50_cifar_mobilenetv2.py --workdir runs/cifar100/kd_resnet50_cifar_mobilenetv2
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.student('cifar100', 'resnet50_cifar', 'mobilenetv2', recipes.kd_terms(weight=0.9, temperature=4.0),
                         ce_weight=0.1)
