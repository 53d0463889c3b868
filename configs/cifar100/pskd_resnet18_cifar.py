"""PS-KD resnet18_cifar on cifar100 (the one-stage setting of seed 004): soft CE against (1 - a_t) y +
a_t p_prev, a_t = 0.8 (e + 1) / 300; 300 epochs, Nesterov, lr 0.1 /10 at 150, 225.

  kdjax train --config configs/cifar100/pskd_resnet18_cifar.py --workdir runs/cifar100/pskd_resnet18_cifar
  kdjax train --config configs/cifar100/pskd_resnet18_cifar.py:baseline --workdir runs/cifar100/pskd_baseline_resnet18_cifar
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.pskd('resnet18_cifar', arg=arg)
