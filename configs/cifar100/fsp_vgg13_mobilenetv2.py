"""FSP (RD: 30-epoch FSP init stage at lr 0.05, then CE only; needs equal channel counts): vgg13 -> mobilenetv2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_vgg13.py --workdir runs/cifar100/teacher_vgg13
  kdjax train --config configs/cifar100/fsp_vgg13_mobilenetv2.py --workdir runs/cifar100/fsp_vgg13_mobilenetv2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('fsp', 'vgg13', 'mobilenetv2')
