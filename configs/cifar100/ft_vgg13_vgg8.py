"""factor transfer (RD: 30-epoch paraphraser stage, then CE + 200 FT): vgg13 -> vgg8 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_vgg13.py --workdir runs/cifar100/teacher_vgg13
  kdjax train --config configs/cifar100/ft_vgg13_vgg8.py --workdir runs/cifar100/ft_vgg13_vgg8
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('ft', 'vgg13', 'vgg8')
