"""weighted soft labels (CE + 2.5 WSLD, tau 4; CIFAR constants unpublished, see METHODS.md 8): resnet110 -> resnet32 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet110.py --workdir runs/cifar100/teacher_resnet110
  kdjax train --config configs/cifar100/wsld_resnet110_resnet32.py --workdir runs/cifar100/wsld_resnet110_resnet32
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('wsld', 'resnet110', 'resnet32')
