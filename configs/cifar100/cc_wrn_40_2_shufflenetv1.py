"""correlation congruence (RD: CE + 0.02 CC on trainable 128-d embeddings): wrn_40_2 -> shufflenetv1 on cifar100, RepDistiller/CRD recipe.

  kdjax train --config configs/cifar100/teacher_wrn_40_2.py --workdir runs/cifar100/teacher_wrn_40_2
  kdjax train --config configs/cifar100/cc_wrn_40_2_shufflenetv1.py --workdir runs/cifar100/cc_wrn_40_2_shufflenetv1
"""

from kdjax import rd_table


def get_config(arg=None):
  del arg
  return rd_table.config('cc', 'wrn_40_2', 'shufflenetv1')
