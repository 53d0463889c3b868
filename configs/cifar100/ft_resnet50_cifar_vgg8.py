"""factor transfer (RD: 30-epoch paraphraser stage, then CE + 200 FT): resnet50_cifar -> vgg8 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet50_cifar.py --workdir runs/cifar100/teacher_resnet50_cifar
  kdjax train --config configs/cifar100/ft_resnet50_cifar_vgg8.py --workdir runs/cifar100/ft_resnet50_cifar_vgg8
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('ft', 'resnet50_cifar', 'vgg8')
