"""SRRL resnet26 -> resnet14 on cifar10 (seed 003 Table 5): CE + L_FM + L_SR (MSE through the frozen
teacher head); seed 003 CIFAR-10 recipe.

  kdjax train --config configs/cifar10/srrl_resnet26_resnet14.py:teacher --workdir runs/cifar10/srrl/teacher_resnet26
  kdjax train --config configs/cifar10/srrl_resnet26_resnet14.py --workdir runs/cifar10/srrl_resnet26_resnet14
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.srrl('cifar10', 'resnet26', 'resnet14', arg=arg, protocol='seed003')
