"""IE-AT resnet110 -> resnet32 on cifar100 (seed 000, Table 6 companions): 30 AE epochs on the frozen
teacher, then 160 epochs (Nesterov, lr 0.1 /10 at 80, 120), lambda_inh = lambda_exp = 50, split
0.5/0.5.

  kdjax train --config configs/cifar100/ie_at_resnet110_resnet32.py:teacher --workdir runs/cifar100/ie_kd/teacher_resnet110
  kdjax train --config configs/cifar100/ie_at_resnet110_resnet32.py --workdir runs/cifar100/ie_at_resnet110_resnet32
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.ie_kd('cifar100', 'resnet110', 'resnet32', variant='at', arg=arg)
