"""weighted soft labels (CE + 2.5 WSLD, tau 4; CIFAR constants unpublished, see METHODS.md 8): wrn_40_2 -> shufflenetv1 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_wrn_40_2.py --workdir runs/cifar100/teacher_wrn_40_2
  kdjax train --config configs/cifar100/wsld_wrn_40_2_shufflenetv1.py --workdir runs/cifar100/wsld_wrn_40_2_shufflenetv1
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('wsld', 'wrn_40_2', 'shufflenetv1')
