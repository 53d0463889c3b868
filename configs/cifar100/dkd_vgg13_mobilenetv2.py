"""decoupled KD (CE + DKD, alpha 1, beta per pair as mdistiller, tau 4, 20-epoch warm-up): vgg13 -> mobilenetv2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_vgg13.py --workdir runs/cifar100/teacher_vgg13
  kdjax train --config configs/cifar100/dkd_vgg13_mobilenetv2.py --workdir runs/cifar100/dkd_vgg13_mobilenetv2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('dkd', 'vgg13', 'mobilenetv2')
