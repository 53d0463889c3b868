"""SRRL resnet56 -> resnet20 on cifar100 (seed 003 Table 11): CE + L_FM + L_SR (MSE through the frozen
teacher head); CRD protocol (240 epochs, batch 64, lr 0.05/0.01 /10 at 150, 180, 210).

  kdjax train --config configs/cifar100/teacher_resnet56.py --workdir runs/cifar100/teacher_resnet56
  kdjax train --config configs/cifar100/srrl_resnet56_resnet20.py --workdir runs/cifar100/srrl_resnet56_resnet20
"""

from kdjax import seed_configs


def get_config(arg=None):
  return seed_configs.srrl('cifar100', 'resnet56', 'resnet20', arg=arg, protocol='crd')
