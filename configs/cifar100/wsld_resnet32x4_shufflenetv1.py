"""weighted soft labels (CE + 2.5 WSLD, tau 4; CIFAR constants unpublished, see METHODS.md 8): resnet32x4 -> shufflenetv1 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet32x4.py --workdir runs/cifar100/teacher_resnet32x4
  kdjax train --config configs/cifar100/wsld_resnet32x4_shufflenetv1.py --workdir runs/cifar100/wsld_resnet32x4_shufflenetv1
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('wsld', 'resnet32x4', 'shufflenetv1')
