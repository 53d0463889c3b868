"""FitNet (RD: CE + 100 hint MSE at stage2 through ConvReg): vgg13 -> mobilenetv2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_vgg13.py --workdir runs/cifar100/teacher_vgg13
  kdjax train --config configs/cifar100/fitnet_vgg13_mobilenetv2.py --workdir runs/cifar100/fitnet_vgg13_mobilenetv2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('fitnet', 'vgg13', 'mobilenetv2')
