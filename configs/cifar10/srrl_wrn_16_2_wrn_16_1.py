"""SRRL wrn_16_2 -> wrn_16_1 on cifar10 (seed 003 Table 5): CE + L_FM + L_SR (MSE through the frozen
teacher head); seed 003 CIFAR-10 recipe.

  kdjax train --config configs/cifar10/srrl_wrn_16_2_wrn_16_1.py:teacher --workdir runs/cifar10/srrl/teacher_wrn_16_2
  kdjax train --config configs/cifar10/srrl_wrn_16_2_wrn_16_1.py --workdir runs/cifar10/srrl_wrn_16_2_wrn_16_1
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.srrl('cifar10', 'wrn_16_2', 'wrn_16_1', arg=arg, protocol='seed003')
