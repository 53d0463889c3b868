"""FSP (RD: 30-epoch FSP init stage at lr 0.05, then CE only; needs equal channel counts): resnet50_cifar -> mobilenetv2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet50_cifar.py --workdir runs/cifar100/teacher_resnet50_cifar
  kdjax train --config configs/cifar100/fsp_resnet50_cifar_mobilenetv2.py --workdir runs/cifar100/fsp_resnet50_cifar_mobilenetv2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('fsp', 'resnet50_cifar', 'mobilenetv2')
