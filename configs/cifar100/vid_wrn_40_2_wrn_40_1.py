"""variational information distillation (RD: CE + 1 VID on the stage outputs): wrn_40_2 -> wrn_40_1 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_wrn_40_2.py --workdir runs/cifar100/teacher_wrn_40_2
  kdjax train --config configs/cifar100/vid_wrn_40_2_wrn_40_1.py --workdir runs/cifar100/vid_wrn_40_2_wrn_40_1
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('vid', 'wrn_40_2', 'wrn_40_1')
