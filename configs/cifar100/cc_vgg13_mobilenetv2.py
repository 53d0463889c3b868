"""correlation congruence (RD: CE + 0.02 CC on trainable 128-d embeddings): vgg13 -> mobilenetv2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_vgg13.py --workdir runs/cifar100/teacher_vgg13
  kdjax train --config configs/cifar100/cc_vgg13_mobilenetv2.py --workdir runs/cifar100/cc_vgg13_mobilenetv2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('cc', 'vgg13', 'mobilenetv2')
