"""SRRL resnet34_cifar -> wrn_16_2 on cifar100 (seed 003 Tables 6, 10): CE + L_FM + L_SR (MSE through
the frozen teacher head); seed 003 CIFAR-100 recipe (200 epochs, batch 128, lr 0.1 /10 at 100, 150).

  kdjax train --config configs/cifar100/srrl_resnet34_cifar_wrn_16_2.py:teacher --workdir runs/cifar100/srrl/teacher_resnet34_cifar
  kdjax train --config configs/cifar100/srrl_resnet34_cifar_wrn_16_2.py --workdir runs/cifar100/srrl_resnet34_cifar_wrn_16_2
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.srrl('cifar100', 'resnet34_cifar', 'wrn_16_2', arg=arg, protocol='seed003')
