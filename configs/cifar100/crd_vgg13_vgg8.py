"""contrastive representation distillation (RD: CE + 0.8 CRD, 16384 negatives): vgg13 -> vgg8 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_vgg13.py --workdir runs/cifar100/teacher_vgg13
  kdjax train --config configs/cifar100/crd_vgg13_vgg8.py --workdir runs/cifar100/crd_vgg13_vgg8
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('crd', 'vgg13', 'vgg8')
