"""decoupled KD (CE + DKD, alpha 1, beta per pair as mdistiller, tau 4, 20-epoch warm-up): resnet50_cifar -> mobilenetv2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet50_cifar.py --workdir runs/cifar100/teacher_resnet50_cifar
  kdjax train --config configs/cifar100/dkd_resnet50_cifar_mobilenetv2.py --workdir runs/cifar100/dkd_resnet50_cifar_mobilenetv2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('dkd', 'resnet50_cifar', 'mobilenetv2')
