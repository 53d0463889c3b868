"""contrastive representation distillation (RD: CE + 0.8 CRD, 16384 negatives): resnet110 -> resnet32 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet110.py --workdir runs/cifar100/teacher_resnet110
  kdjax train --config configs/cifar100/crd_resnet110_resnet32.py --workdir runs/cifar100/crd_resnet110_resnet32
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('crd', 'resnet110', 'resnet32')
