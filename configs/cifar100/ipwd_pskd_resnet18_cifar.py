"""IPWD on PS-KD, resnet18_cifar on cifar100 (seed 004 one-stage setting): the teacher distribution is
PS-KD's progressive target, weighted by w (alpha 1, tau 1; with w = 1 this is PS-KD); the PS-KD
recipe.

  kdjax train --config configs/cifar100/ipwd_pskd_resnet18_cifar.py --workdir runs/cifar100/ipwd_pskd_resnet18_cifar
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.ipwd_pskd('resnet18_cifar', arg=arg)
