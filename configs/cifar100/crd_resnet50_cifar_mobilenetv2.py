"""contrastive representation distillation (RD: CE + 0.8 CRD, 16384 negatives): resnet50_cifar -> mobilenetv2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet50_cifar.py --workdir runs/cifar100/teacher_resnet50_cifar
  kdjax train --config configs/cifar100/crd_resnet50_cifar_mobilenetv2.py --workdir runs/cifar100/crd_resnet50_cifar_mobilenetv2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('crd', 'resnet50_cifar', 'mobilenetv2')
