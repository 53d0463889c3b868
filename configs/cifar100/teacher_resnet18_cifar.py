"""Train resnet18_cifar from scratch on cifar100 (a teacher, or a student baseline).

  kdjax train --config configs/cifar100/teacher_resnet18_cifar.py --workdir runs/cifar100/teacher_resnet18_cifar
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.teacher('cifar100', 'resnet18_cifar')
