"""IE-FT resnet56 -> resnet20 on cifar10 (seed 000, Table 1): 30 AE epochs on the frozen teacher, then
160 epochs (Nesterov, lr 0.1 /10 at 80, 120), lambda_inh = lambda_exp = 50, split 0.5/0.5.

  kdjax train --config configs/cifar10/ie_ft_resnet56_resnet20.py:teacher --workdir runs/cifar10/ie_kd/teacher_resnet56
  kdjax train --config configs/cifar10/ie_ft_resnet56_resnet20.py --workdir runs/cifar10/ie_ft_resnet56_resnet20
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.ie_kd('cifar10', 'resnet56', 'resnet20', variant='ft', arg=arg)
