"""CRD+KD (RD: CE + 1.0 KD (tau 4) + 0.8 CRD): resnet50_cifar -> vgg8 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet50_cifar.py --workdir runs/cifar100/teacher_resnet50_cifar
  kdjax train --config configs/cifar100/crd_kd_resnet50_cifar_vgg8.py --workdir runs/cifar100/crd_kd_resnet50_cifar_vgg8
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('crd_kd', 'resnet50_cifar', 'vgg8')
