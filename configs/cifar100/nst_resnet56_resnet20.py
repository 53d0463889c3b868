"""neuron selectivity transfer (RD: CE + 50 NST on the stage outputs): resnet56 -> resnet20 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet56.py --workdir runs/cifar100/teacher_resnet56
  kdjax train --config configs/cifar100/nst_resnet56_resnet20.py --workdir runs/cifar100/nst_resnet56_resnet20
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('nst', 'resnet56', 'resnet20')
