"""IE-FT resnet20 -> wrn_40_1 on cifar10 (seed 000, supplementary Table 2, small teacher -> large
student): 30 AE epochs on the frozen teacher, then 160 epochs (Nesterov, lr 0.1 /10 at 80, 120),
lambda_inh = lambda_exp = 50, split 0.5/0.5.

  kdjax train --config configs/cifar10/ie_ft_resnet20_wrn_40_1.py:teacher --workdir runs/cifar10/ie_kd/teacher_resnet20
  kdjax train --config configs/cifar10/ie_ft_resnet20_wrn_40_1.py --workdir runs/cifar10/ie_ft_resnet20_wrn_40_1
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.ie_kd('cifar10', 'resnet20', 'wrn_40_1', variant='ft', arg=arg)
