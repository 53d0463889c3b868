"""IE-AT resnet20 -> resnet56 on cifar10 (seed 000, supplementary Table 2, small teacher -> large
student): 30 AE epochs on the frozen teacher, then 160 epochs (Nesterov, lr 0.1 /10 at 80, 120),
lambda_inh = lambda_exp = 50, split 0.5/0.5.

  kdjax train --config configs/cifar10/ie_at_resnet20_resnet56.py:teacher --workdir runs/cifar10/ie_kd/teacher_resnet20
  kdjax train --config configs/cifar10/ie_at_resnet20_resnet56.py --workdir runs/cifar10/ie_at_resnet20_resnet56
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.ie_kd('cifar10', 'resnet20', 'resnet56', variant='at', arg=arg)
