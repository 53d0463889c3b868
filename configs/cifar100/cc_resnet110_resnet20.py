"""correlation congruence (RD: CE + 0.02 CC on trainable 128-d embeddings): resnet110 -> resnet20 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet110.py --workdir runs/cifar100/teacher_resnet110
  kdjax train --config configs/cifar100/cc_resnet110_resnet20.py --workdir runs/cifar100/cc_resnet110_resnet20
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('cc', 'resnet110', 'resnet20')
