"""weighted soft labels (CE + 2.5 WSLD, tau 4; CIFAR constants unpublished, see METHODS.md 8): resnet50_cifar -> mobilenetv2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet50_cifar.py --workdir runs/cifar100/teacher_resnet50_cifar
  kdjax train --config configs/cifar100/wsld_resnet50_cifar_mobilenetv2.py --workdir runs/cifar100/wsld_resnet50_cifar_mobilenetv2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('wsld', 'resnet50_cifar', 'mobilenetv2')
