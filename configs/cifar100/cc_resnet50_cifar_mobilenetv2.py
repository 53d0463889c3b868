"""correlation congruence (RD: CE + 0.02 CC on trainable 128-d embeddings): resnet50_cifar -> mobilenetv2 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet50_cifar.py --workdir runs/cifar100/teacher_resnet50_cifar
  kdjax train --config configs/cifar100/cc_resnet50_cifar_mobilenetv2.py --workdir runs/cifar100/cc_resnet50_cifar_mobilenetv2
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('cc', 'resnet50_cifar', 'mobilenetv2')
