"""probabilistic knowledge transfer (RD: CE + 30000 PKT on the pooled vector): resnet110 -> resnet32 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_resnet110.py --workdir runs/cifar100/teacher_resnet110
  kdjax train --config configs/cifar100/pkt_resnet110_resnet32.py --workdir runs/cifar100/pkt_resnet110_resnet32
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('pkt', 'resnet110', 'resnet32')
