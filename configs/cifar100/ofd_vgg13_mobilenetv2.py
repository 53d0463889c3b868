"""overhaul of feature distillation (official weight: CE + 1e-3 OFD / N on pre-ReLU maps): vgg13 -> mobilenetv2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_vgg13.py --workdir runs/cifar100/teacher_vgg13
  kdjax train --config configs/cifar100/ofd_vgg13_mobilenetv2.py --workdir runs/cifar100/ofd_vgg13_mobilenetv2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('ofd', 'vgg13', 'mobilenetv2')
