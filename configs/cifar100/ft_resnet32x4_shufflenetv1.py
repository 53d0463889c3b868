"""factor transfer (RD: 30-epoch paraphraser stage, then CE + 200 FT): resnet32x4 -> shufflenetv1 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet32x4.py --workdir runs/cifar100/teacher_resnet32x4
  kdjax train --config configs/cifar100/ft_resnet32x4_shufflenetv1.py --workdir runs/cifar100/ft_resnet32x4_shufflenetv1
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('ft', 'resnet32x4', 'shufflenetv1')
