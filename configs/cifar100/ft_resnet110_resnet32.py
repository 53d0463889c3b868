"""factor transfer (RD: 30-epoch paraphraser stage, then CE + 200 FT): resnet110 -> resnet32 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet110.py --workdir runs/cifar100/teacher_resnet110
  kdjax train --config configs/cifar100/ft_resnet110_resnet32.py --workdir runs/cifar100/ft_resnet110_resnet32
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('ft', 'resnet110', 'resnet32')
