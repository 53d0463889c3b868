"""Train wrn_40_2 from scratch on cifar10 (a teacher, or a student baseline).

  kdjax train --config configs/cifar10/teacher_wrn_40_2.py --workdir runs/cifar10/teacher_wrn_40_2
"""

from kdjax import recipes


def get_config(arg=None):
  del arg
  return recipes.teacher('cifar10', 'wrn_40_2')
