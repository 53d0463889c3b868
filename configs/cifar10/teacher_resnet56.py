"""Train resnet56 from scratch on cifar10 (a teacher, or a student baseline).

  kdjax train --config configs/cifar10/teacher_resnet56.py --workdir runs/cifar10/teacher_resnet56
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.teacher('cifar10', 'resnet56')
