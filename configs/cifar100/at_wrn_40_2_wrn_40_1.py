"""attention transfer (RD: CE + 1000 AT on the stage outputs): wrn_40_2 -> wrn_40_1 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_wrn_40_2.py --workdir runs/cifar100/teacher_wrn_40_2
  kdjax train --config configs/cifar100/at_wrn_40_2_wrn_40_1.py --workdir runs/cifar100/at_wrn_40_2_wrn_40_1
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('at', 'wrn_40_2', 'wrn_40_1')
