"""Train resnet20 from scratch on cifar10 (a teacher, or a student baseline).

  kdjax train --config configs/cifar10/teacher_resnet20.py --workdir runs/cifar10/teacher_resnet20
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.teacher('cifar10', 'resnet20')
