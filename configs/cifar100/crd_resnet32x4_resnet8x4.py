"""contrastive representation distillation (RD: CE + 0.8 CRD, 16384 negatives): resnet32x4 -> resnet8x4 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet32x4.py --workdir runs/cifar100/teacher_resnet32x4
  kdjax train --config configs/cifar100/crd_resnet32x4_resnet8x4.py --workdir runs/cifar100/crd_resnet32x4_resnet8x4
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('crd', 'resnet32x4', 'resnet8x4')
