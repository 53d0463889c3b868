"""weighted soft labels (CE + 2.5 WSLD, tau 4; CIFAR constants unpublished, see METHODS.md 8): resnet56 -> resnet20 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet56.py --workdir runs/cifar100/teacher_resnet56
  kdjax train --config configs/cifar100/wsld_resnet56_resnet20.py --workdir runs/cifar100/wsld_resnet56_resnet20
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('wsld', 'resnet56', 'resnet20')
