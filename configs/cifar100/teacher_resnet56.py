"""Train resnet56 from scratch on cifar100 (a teacher, or a student baseline).

  kdjax train --config configs/cifar100/teacher_resnet56.py --workdir runs/cifar100/teacher_resnet56
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.teacher('cifar100', 'resnet56')
