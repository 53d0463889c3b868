"""weighted soft labels (CE + 2.5 WSLD, tau 4; CIFAR constants unpublished, see METHODS.md 8): vgg13 -> vgg8 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_vgg13.py --workdir runs/cifar100/teacher_vgg13
  kdjax train --config configs/cifar100/wsld_vgg13_vgg8.py --workdir runs/cifar100/wsld_vgg13_vgg8
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('wsld', 'vgg13', 'vgg8')
